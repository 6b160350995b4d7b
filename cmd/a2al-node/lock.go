package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive advisory lock on <dir>/lock for the life of
// the node. Two nodes on one data dir would share a key (one identity twice in
// the DHT) and overwrite each other's peer caches; the second one is refused
// with a message saying what to do instead.
func lockDataDir(dir string) (unlock func(), err error) {
	p := filepath.Join(dir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir lock %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another running a2al-node; give this node its own --data-dir (and --listen port)", dir)
		}
		return nil, fmt.Errorf("data dir lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}
