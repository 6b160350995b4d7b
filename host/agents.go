package host

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// MaxAgents bounds the agent identities one host serves besides its own.
const MaxAgents = 64

// ErrAgent is wrapped by agent registration failures.
var ErrAgent = errors.New("host: agent")

// agentSet holds the identities the host answers for besides the node's own
// (docs/modea.md): plain agents with their own key and delegated agents
// (operational key + proof). Its lock guards only the map.
type agentSet struct {
	mu sync.RWMutex
	m  map[a2al.Address]*Identity
}

// AddAgent makes the host answer Mode A connections for id.Address with id's
// certificate, and publish an endpoint record for it (signed with id's key and
// carrying its delegation) alongside the node's own.
func (h *Host) AddAgent(id *Identity) error {
	if id == nil || id.Address == h.id.Address {
		return fmt.Errorf("%w: the node identity is not an agent", ErrAgent)
	}
	id.now = h.cfg.Clock.Now
	h.agents.mu.Lock()
	if _, dup := h.agents.m[id.Address]; !dup && len(h.agents.m) >= MaxAgents {
		h.agents.mu.Unlock()
		return fmt.Errorf("%w: at most %d agents", ErrAgent, MaxAgents)
	}
	h.agents.m[id.Address] = id
	h.agents.mu.Unlock()
	h.mu.Lock()
	h.pub.lastAt = time.Time{} // publish the new agent's record at the next round
	h.mu.Unlock()
	h.kickPublish()
	return nil
}

// RemoveAgent stops answering for addr (its published record expires).
func (h *Host) RemoveAgent(addr a2al.Address) {
	h.agents.mu.Lock()
	delete(h.agents.m, addr)
	h.agents.mu.Unlock()
}

// Agents lists the hosted agent addresses (not the node's own).
func (h *Host) Agents() []a2al.Address {
	h.agents.mu.RLock()
	defer h.agents.mu.RUnlock()
	out := make([]a2al.Address, 0, len(h.agents.m))
	for a := range h.agents.m {
		out = append(out, a)
	}
	return out
}

// localIdentity returns the identity answering for addr: the node's own or a
// hosted agent; nil if the host does not answer for addr.
func (h *Host) localIdentity(addr a2al.Address) *Identity {
	if addr == h.id.Address {
		return h.id
	}
	h.agents.mu.RLock()
	defer h.agents.mu.RUnlock()
	return h.agents.m[addr]
}

// agentBySNI picks the certificate for a TLS client's SNI (the dialled
// address's text form); nil means the node's own.
func (h *Host) agentBySNI(sni string) *Identity {
	a, err := a2al.ParseAddress(sni)
	if err != nil {
		return nil
	}
	h.agents.mu.RLock()
	defer h.agents.mu.RUnlock()
	return h.agents.m[a]
}

// publishAgents publishes an endpoint record for every hosted agent with the
// node's payload, so a dial to the agent's address finds this node.
func (h *Host) publishAgents(ctx context.Context, p protocol.EndpointPayload, seq, now uint64) {
	h.agents.mu.RLock()
	ids := make([]*Identity, 0, len(h.agents.m))
	for _, id := range h.agents.m {
		ids = append(ids, id)
	}
	h.agents.mu.RUnlock()
	for _, id := range ids {
		rec, err := agentEndpointRecord(id, p, seq, now, h.cfg.RecordTTL)
		if err == nil {
			err = h.node.PublishEndpointRecord(ctx, rec)
		}
		if err != nil {
			h.log.Warn("agent endpoint record not published", "agent", id.Address.String(), "err", err)
		}
	}
}

func agentEndpointRecord(id *Identity, p protocol.EndpointPayload, seq, now uint64, ttl uint32) (protocol.SignedRecord, error) {
	payload, err := protocol.EncodeEndpointPayload(p)
	if err != nil {
		return protocol.SignedRecord{}, err
	}
	rec := protocol.SignedRecord{Address: id.Address, RecType: protocol.RecTypeEndpoint, Payload: payload,
		Seq: seq, Timestamp: now, TTL: ttl, Delegation: id.Delegation}
	sign := func(msg []byte) ([]byte, error) { return ed25519.Sign(id.Key, msg), nil }
	if err := protocol.SignRecord(&rec, id.Key.Public().(ed25519.PublicKey), sign); err != nil {
		return rec, fmt.Errorf("host: agent %s endpoint record: %w", id.Address.String(), err)
	}
	return rec, nil
}
