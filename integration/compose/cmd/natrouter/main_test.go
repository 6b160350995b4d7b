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

func TestJSONField(t *testing.T) {
	body := []byte(`{"nat":{"type":"full-cone"},"punches":[{"ok":false},{"ok":true,"n":3}]}`)
	for path, want := range map[string]string{
		"nat.type": "full-cone", "punches.1.ok": "true", "punches.-1.n": "3", "nat": `{"type":"full-cone"}`,
	} {
		if got, err := jsonField(body, path); err != nil || got != want {
			t.Errorf("jsonField(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
	for _, bad := range []string{"x", "punches.9", "punches.a", "nat.type.z"} {
		if _, err := jsonField(body, bad); err == nil {
			t.Errorf("jsonField(%q) succeeded", bad)
		}
	}
	if _, err := jsonField([]byte("not json"), "a"); err == nil {
		t.Error("non-JSON body accepted")
	}
}

func FuzzJSONField(f *testing.F) {
	f.Add([]byte(`{"a":[1,{"b":"c"}]}`), "a.1.b")
	f.Add([]byte(`[]`), "-1")
	f.Fuzz(func(t *testing.T, body []byte, path string) {
		_, _ = jsonField(body, path) // must not panic
	})
}
