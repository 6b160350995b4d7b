package natprobe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun"

	"github.com/a2alnode/a2al/transport"
)

// PacketListener opens UDP sockets. *net.ListenConfig-free code paths use the
// real network; pion's *vnet.Net satisfies it for simulations.
type PacketListener interface {
	ListenPacket(network, address string) (net.PacketConn, error)
}

// ServerConns are pre-opened sockets for a server. Primary and AltPort are
// required; AltIP (second IP, primary port) and AltIPAltPort (second IP,
// alternate port) are both set or both nil.
type ServerConns struct {
	Primary, AltPort, AltIP, AltIPAltPort net.PacketConn
}

// ServerStats are cumulative counters.
type ServerStats struct {
	Requests          uint64 // well-formed Binding requests
	Responses         uint64 // replies sent
	Malformed         uint64 // undecodable packets (dropped)
	Ignored           uint64 // well-formed STUN that is not a Binding request
	RateLimited       uint64 // packets dropped by the per-source limit (before decoding)
	DroppedAmplify    uint64 // requests too small for even the minimal reply
	ChangeRequests    uint64 // requests with CHANGE-REQUEST flags set
	ChangeUnsupported uint64 // change-IP asked of a server without a second IP
	WriteErrors       uint64
}

// Socket indices in the server grid: bit 0 flips the port, bit 1 the IP.
const (
	sockPrimary = 0
	sockAltPort = 1
	sockAltIP   = 2
	numSockets  = 4
)

// Server is an RFC 5780 STUN Binding server.
type Server struct {
	conns     [numSockets]net.PacketConn
	addrs     [numSockets]netip.AddrPort // advertised address of each socket
	owned     bool
	slack     int
	limit     *sourceLimiter // nil: no per-source limit
	log       *slog.Logger
	wg        sync.WaitGroup
	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error

	requests, responses, malformed, ignored, dropAmp, changes, changeUnsup, writeErrs, rateLimited atomic.Uint64
}

// NewServer opens (or adopts) the socket grid and starts one reader per socket.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &Server{slack: cfg.ReplySlack, log: cfg.Logger}
	if !cfg.DisableRateLimit {
		s.limit = newSourceLimiter(cfg.RatePerSource, cfg.BurstPerSource, cfg.Clock.Now)
	}
	if cfg.Conns.Primary != nil {
		if cfg.Conns.AltPort == nil || (cfg.Conns.AltIP == nil) != (cfg.Conns.AltIPAltPort == nil) {
			return nil, errors.New("natprobe: ServerConns needs Primary+AltPort, and AltIP+AltIPAltPort together")
		}
		s.conns = [numSockets]net.PacketConn{cfg.Conns.Primary, cfg.Conns.AltPort, cfg.Conns.AltIP, cfg.Conns.AltIPAltPort}
	} else if err := s.listen(cfg); err != nil {
		return nil, err
	}
	for i, c := range s.conns {
		if c == nil {
			continue
		}
		ap, ok := addrPortOf(c.LocalAddr())
		if !ok {
			s.closeConns()
			return nil, fmt.Errorf("natprobe: socket %d has a non-UDP local address %v", i, c.LocalAddr())
		}
		adv := cfg.AdvertiseIP
		if i&sockAltIP != 0 {
			adv = cfg.AdvertiseAltIP
		}
		if a, ok := netip.AddrFromSlice(adv); ok {
			ap = netip.AddrPortFrom(a.Unmap(), ap.Port())
		}
		s.addrs[i] = ap
	}
	for i, c := range s.conns {
		if c != nil {
			s.wg.Add(1)
			go s.serve(i, c)
		}
	}
	return s, nil
}

// listen opens the grid {Addr IP, AltIP} x {port, alt port}.
func (s *Server) listen(cfg ServerConfig) error {
	s.owned = true
	ln := cfg.Net
	network := func(string) string { return "udp4" } // vnet is IPv4
	if ln == nil {
		ln = stdListener{}
		network = transport.ListenNetwork // a wildcard host serves both families
	}
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return fmt.Errorf("natprobe: server address %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 0xFFFF {
		return fmt.Errorf("natprobe: server port %q is not a port number", portStr)
	}
	altPort := cfg.AltPort
	if altPort == 0 && port != 0 {
		altPort = port + 1
	}
	open := func(i int, ip string, p int) error {
		c, err := ln.ListenPacket(network(ip), net.JoinHostPort(ip, strconv.Itoa(p)))
		if err != nil {
			s.closeConns()
			return fmt.Errorf("natprobe: listen %s:%d: %w", ip, p, err)
		}
		s.conns[i] = c
		return nil
	}
	if err := open(sockPrimary, host, port); err != nil {
		return err
	}
	if err := open(sockAltPort, host, altPort); err != nil {
		return err
	}
	if cfg.AltIP == "" {
		return nil
	}
	// Reuse the ports actually bound so the grid is symmetric.
	p0, _ := addrPortOf(s.conns[sockPrimary].LocalAddr())
	p1, _ := addrPortOf(s.conns[sockAltPort].LocalAddr())
	if err := open(sockAltIP, cfg.AltIP, int(p0.Port())); err != nil {
		return err
	}
	return open(sockAltIP|sockAltPort, cfg.AltIP, int(p1.Port()))
}

type stdListener struct{}

func (stdListener) ListenPacket(network, address string) (net.PacketConn, error) {
	var lc net.ListenConfig
	return lc.ListenPacket(context.Background(), network, address)
}

// Addr returns the primary address; AltAddr the OTHER-ADDRESS advertised for
// it (second IP and alternate port, or alternate port only).
func (s *Server) Addr() *net.UDPAddr { return udpAddr(s.addrs[sockPrimary]) }

// AltAddr returns the address advertised as OTHER-ADDRESS for the primary socket.
func (s *Server) AltAddr() *net.UDPAddr { return udpAddr(s.addrs[s.other(sockPrimary)]) }

// HasAltIP reports whether change-IP is supported.
func (s *Server) HasAltIP() bool { return s.conns[sockAltIP] != nil }

func (s *Server) other(i int) int {
	if s.HasAltIP() {
		return i ^ (sockAltIP | sockAltPort)
	}
	return i ^ sockAltPort
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Requests: s.requests.Load(), Responses: s.responses.Load(), Malformed: s.malformed.Load(),
		Ignored: s.ignored.Load(), DroppedAmplify: s.dropAmp.Load(), ChangeRequests: s.changes.Load(),
		ChangeUnsupported: s.changeUnsup.Load(), WriteErrors: s.writeErrs.Load(), RateLimited: s.rateLimited.Load(),
	}
}

// Close stops the readers and closes the sockets the server opened itself.
// For caller-supplied sockets it waits at most 5 s for the readers, which
// need SetReadDeadline support to notice.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		if s.owned {
			s.closeConns()
		} else {
			for _, c := range s.conns {
				if c != nil {
					_ = c.SetReadDeadline(time.Now())
				}
			}
		}
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			s.closeErr = errors.New("natprobe: server readers did not stop within 5s (socket ignores read deadlines?)")
		}
	})
	return s.closeErr
}

func (s *Server) closeConns() {
	for _, c := range s.conns {
		if c != nil {
			_ = c.Close()
		}
	}
}

// serve reads one socket until Close.
func (s *Server) serve(idx int, c net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if s.closing.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Someone else's deadline; clear it and keep serving. Re-check
				// closing: Close may have set its deadline just before.
				_ = c.SetReadDeadline(time.Time{})
				if s.closing.Load() {
					return
				}
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("natprobe server read", "socket", idx, "err", err)
			time.Sleep(10 * time.Millisecond) // avoid spinning on persistent errors
			continue
		}
		if n == len(buf) { // possibly truncated; never a valid request of ours
			s.malformed.Add(1)
			continue
		}
		if src, ok := addrPortOf(from); ok && s.limit != nil && !s.limit.allow(src.Addr()) {
			s.rateLimited.Add(1)
			continue
		}
		reply, out, ok := s.handle(buf[:n], from, idx)
		if !ok {
			continue
		}
		if _, err := s.conns[out].WriteTo(reply, from); err != nil {
			s.writeErrs.Add(1)
			s.log.Debug("natprobe server write", "to", from, "err", err)
			continue
		}
		s.responses.Add(1)
	}
}

// handle turns one received packet into a reply and the index of the socket
// to send it from. It is the fuzzed core: any input, no panic, and
// len(reply) <= len(pkt)+slack.
func (s *Server) handle(pkt []byte, from net.Addr, in int) (reply []byte, out int, ok bool) {
	src, valid := addrPortOf(from)
	if !valid || src.Port() == 0 {
		s.malformed.Add(1)
		return nil, 0, false
	}
	m := new(stun.Message)
	if err := decodeStrict(pkt, m); err != nil {
		s.malformed.Add(1)
		return nil, 0, false
	}
	if m.Type != stun.BindingRequest {
		s.ignored.Add(1)
		return nil, 0, false
	}
	s.requests.Add(1)
	out = in
	if v, err := m.Get(stun.AttrChangeRequest); err == nil {
		if len(v) != 4 {
			s.malformed.Add(1)
			return nil, 0, false
		}
		flags := binary.BigEndian.Uint32(v)
		if flags&(flagChangeIP|flagChangePort) != 0 {
			s.changes.Add(1)
		}
		if flags&flagChangeIP != 0 {
			if !s.HasAltIP() {
				s.changeUnsup.Add(1)
				return nil, 0, false
			}
			out ^= sockAltIP
		}
		if flags&flagChangePort != 0 {
			out ^= sockAltPort
		}
	}
	if s.conns[out] == nil {
		s.changeUnsup.Add(1)
		return nil, 0, false
	}
	limit := len(pkt) + s.slack
	if src.Addr().Is6() {
		// An IPv6 XOR-MAPPED-ADDRESS is 12 bytes longer than an IPv4 one;
		// the slack is set for IPv4 (docs/host.md §7).
		limit += 12
	}
	withFP := m.Contains(stun.AttrFingerprint)
	full := []stun.Setter{
		&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		&stun.MappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		addrSetter(stun.AttrResponseOrigin, s.addrs[out]),
		addrSetter(stun.AttrOtherAddress, s.addrs[s.other(in)]),
	}
	for _, attrs := range [][]stun.Setter{full, full[:1]} {
		b, err := buildResponse(m.TransactionID, attrs, withFP)
		if err != nil {
			s.log.Debug("natprobe build response", "err", err)
			return nil, 0, false
		}
		if len(b) <= limit {
			return b, out, true
		}
	}
	s.dropAmp.Add(1)
	return nil, 0, false
}

func buildResponse(id [stun.TransactionIDSize]byte, attrs []stun.Setter, withFP bool) ([]byte, error) {
	setters := append([]stun.Setter{stun.BindingSuccess, stun.NewTransactionIDSetter(id)}, attrs...)
	if withFP {
		setters = append(setters, stun.Fingerprint)
	}
	m, err := stun.Build(setters...)
	if err != nil {
		return nil, fmt.Errorf("build binding response: %w", err)
	}
	return m.Raw, nil
}

// addrSetter adds a MAPPED-ADDRESS-encoded attribute of type t.
type addrAttr struct {
	t  stun.AttrType
	ap netip.AddrPort
}

func addrSetter(t stun.AttrType, ap netip.AddrPort) stun.Setter { return addrAttr{t, ap} }

func (a addrAttr) AddTo(m *stun.Message) error {
	ma := stun.MappedAddress{IP: a.ap.Addr().AsSlice(), Port: int(a.ap.Port())}
	return ma.AddToAs(m, a.t)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
