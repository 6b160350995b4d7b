package main

import (
	"testing"
	"time"
)

// TestSmallNetwork runs the whole simulation on a small in-memory network,
// churn included, and checks the agreed outputs.
func TestSmallNetwork(t *testing.T) {
	o := options{
		n: 40, transport: "mem", lookups: 20, churn: 0.25, seed: 3, seeds: 2,
		publish: 0.2, timescale: 20, repair: 2 * time.Minute, concurrency: 4,
		lookupTimout: 10 * time.Second, gogc: 100,
	}
	if err := validate(o); err != nil {
		t.Fatal(err)
	}
	res, err := run(o)
	if err != nil {
		t.Fatal(err)
	}
	if res.LookupSuccess != 1 || res.KClosestPrecision < 0.9 {
		t.Errorf("lookups: success %.3f, precision %.3f", res.LookupSuccess, res.KClosestPrecision)
	}
	if res.RPCsPerLookup <= 0 || res.RPCsPerLookup > 40 {
		t.Errorf("rpcs per lookup %.1f", res.RPCsPerLookup)
	}
	if res.ResolvableFraction != 1 {
		t.Errorf("resolvable fraction %.3f", res.ResolvableFraction)
	}
	if res.ResolvableAfterRepair == nil || *res.ResolvableAfterRepair < 0.9 {
		t.Errorf("resolvable after repair: %v", res.ResolvableAfterRepair)
	}
	if res.KilledNodes != 10 || res.GoroutinesPerNode <= 0 {
		t.Errorf("killed %d, goroutines/node %.1f", res.KilledNodes, res.GoroutinesPerNode)
	}
}
