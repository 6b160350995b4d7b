package main

import (
	"reflect"
	"testing"
)

func TestParsePorts(t *testing.T) {
	got, err := parsePorts("4000-4002, 4121,")
	if err != nil || !reflect.DeepEqual(got, []int{4000, 4001, 4002, 4121}) {
		t.Fatalf("parsePorts = %v, %v", got, err)
	}
	for _, bad := range []string{"x", "5-1", "0", "65536", "1-65535", "10-x"} {
		if _, err := parsePorts(bad); err == nil {
			t.Errorf("parsePorts(%q) accepted", bad)
		}
	}
}
