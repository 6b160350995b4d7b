package dht

import (
	"errors"
	"testing"
)

// Zero fields take DefaultConfig's values; negative limits are refused
// before anything starts; the seed's setters and the Config fields reach
// the same state.
func TestConfigFill(t *testing.T) {
	c := newMemCluster(t)
	tr, _ := c.net.NewTransport("cfg")
	defer tr.Close()
	ks := newTestKeys(3)
	cfg := Config{Transport: tr, Keystore: ks}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	if cfg.MaxStoreKeys != d.MaxStoreKeys || cfg.MaxStoreBytes != d.MaxStoreBytes || cfg.ReplayWindow != d.ReplayWindow ||
		cfg.ReplayCacheSize != d.ReplayCacheSize || cfg.MaxAddrChallenges != d.MaxAddrChallenges ||
		cfg.AddrChallengeRate != d.AddrChallengeRate || cfg.UnprovenAnswerRate != d.UnprovenAnswerRate {
		t.Fatalf("filled %+v, defaults %+v", cfg, d)
	}
	if cfg.Logger == nil || cfg.Clock == nil {
		t.Fatal("nil Logger or Clock left unfilled")
	}
	for name, bad := range map[string]func(*Config){
		"MaxStoreKeys":  func(c *Config) { c.MaxStoreKeys = -1 },
		"MaxStoreBytes": func(c *Config) { c.MaxStoreBytes = -1 },
		"ReplayWindow":  func(c *Config) { c.ReplayWindow = -1 },
		"AddrRate":      func(c *Config) { c.AddrChallengeRate = -1 },
	} {
		cfg := Config{Transport: tr, Keystore: ks}
		bad(&cfg)
		if _, err := NewNode(cfg); !errors.Is(err, errConfig) {
			t.Errorf("negative %s: err = %v, want errConfig", name, err)
		}
	}
	n, err := NewNode(Config{Transport: tr, Keystore: ks, PassiveRouting: true, MaxStoreKeys: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if !n.passive.Load() || n.store.maxKeys != 5 {
		t.Fatalf("Config not applied: passive %v, max keys %d", n.passive.Load(), n.store.maxKeys)
	}
	n.SetPassiveRouting(false)
	if n.passive.Load() {
		t.Fatal("SetPassiveRouting(false) not applied")
	}
}
