package interop

import "testing"

// pushScenarios: HEAD's DHT_PUSH to a subscriber, both directions.
var pushScenarios = []Scenario{}

var _ = testing.Short
