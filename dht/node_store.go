package dht

import (
	"context"
	"errors"
	"fmt"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// PublishEndpointRecord stores rec locally and returns; replication to the
// key's neighbourhood runs in the background. A re-publish of an identical
// record still (re)starts replication (docs/reference-defects.md W-38).
func (n *Node) PublishEndpointRecord(ctx context.Context, rec protocol.SignedRecord) error {
	if n == nil {
		return errNilNode
	}
	key := a2al.NodeIDFromAddress(rec.Address)
	return n.publish(key, rec)
}

// PublishTopicRecord stores a topic record at storeKey and replicates it.
func (n *Node) PublishTopicRecord(ctx context.Context, storeKey a2al.NodeID, rec protocol.SignedRecord) error {
	if n == nil {
		return errNilNode
	}
	if protocol.RecordCategory(rec.RecType) != protocol.CategoryTopic {
		return errNotTopic
	}
	return n.publish(storeKey, rec)
}

// PublishMailboxRecord stores a mailbox record at storeKey (the
// recipient's NodeID) and replicates it.
func (n *Node) PublishMailboxRecord(ctx context.Context, storeKey a2al.NodeID, rec protocol.SignedRecord) error {
	if n == nil {
		return errNilNode
	}
	if protocol.RecordCategory(rec.RecType) != protocol.CategoryMailbox {
		return errNotMailbox
	}
	return n.publish(storeKey, rec)
}

func (n *Node) publish(key a2al.NodeID, rec protocol.SignedRecord) error {
	err := n.store.putFrom(key, rec, n.now(), ownOrigin)
	stale := errors.Is(err, ErrStaleRecord)
	if err != nil && !stale {
		return fmt.Errorf("dht: publish at %x: %w", key[:4], err)
	}
	if stale && !n.holdsExactly(key, rec) {
		return err // a newer record is already stored
	}
	if err == nil {
		n.onNewRecord(key, rec) // subscribers at us get our own new record too
	}
	n.scheduleReplicate(key, rec)
	return nil
}

func (n *Node) holdsExactly(key a2al.NodeID, rec protocol.SignedRecord) bool {
	for _, r := range n.store.GetAll(key, rec.RecType, n.now()) {
		if r.Address == rec.Address && r.Seq == rec.Seq && r.Timestamp == rec.Timestamp && string(r.Signature) == string(rec.Signature) {
			return true
		}
	}
	return false
}

// LocalStoreGet returns valid local records at key (recType 0 = all).
func (n *Node) LocalStoreGet(key a2al.NodeID, recType uint8) []protocol.SignedRecord {
	return n.store.GetAll(key, recType, n.now())
}

// LocalEndpointRecord returns the first endpoint record of id in the local
// store that verifies, parses and satisfies usable (nil accepts any), or
// nil. It never asks the network.
func (n *Node) LocalEndpointRecord(id a2al.NodeID, usable func(*protocol.EndpointRecord) bool) *protocol.EndpointRecord {
	for _, r := range n.store.GetAll(id, protocol.RecTypeEndpoint, n.now()) {
		if !n.acceptRecord(id, r) {
			continue
		}
		er, err := protocol.ParseEndpointRecord(r)
		if err != nil {
			continue
		}
		if usable == nil || usable(er) {
			return er
		}
	}
	return nil
}

// LocalStoreGetByAddress returns valid local records published by addr.
func (n *Node) LocalStoreGetByAddress(addr a2al.Address, recType uint8) []protocol.SignedRecord {
	return n.store.GetAllByAddress(addr, recType, n.now())
}

// LocalStoreInvalidate drops local records at key (recType 0 = all).
func (n *Node) LocalStoreInvalidate(key a2al.NodeID, recType uint8) {
	n.store.Invalidate(key, recType)
}

// LocalStorePut writes rec into the local store without replication.
func (n *Node) LocalStorePut(storeKey a2al.NodeID, rec protocol.SignedRecord) error {
	return n.store.Put(storeKey, rec, n.now())
}
