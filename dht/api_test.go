package dht

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/a2alnode/a2al"
	"github.com/a2alnode/a2al/protocol"
)

// Compile-time check of the public API against the seed documentation.
var (
	_ func(net.Addr) []byte                                                                                            = ObservedAddr
	_ func(Config) (*Node, error)                                                                                      = NewNode
	_ func(*Node) *Query                                                                                               = NewQuery
	_ func(RecordAuthFunc, int) *Store                                                                                 = NewStore
	_ func() *FakePunchNetwork                                                                                         = NewFakePunchNetwork
	_ func(*Node, net.Addr, protocol.NodeInfo)                                                                         = (*Node).AddContact
	_ func(*Node) a2al.Address                                                                                         = (*Node).Address
	_ func(*Node, a2al.NodeID, net.Addr)                                                                               = (*Node).BindPeerAddr
	_ func(*Node, context.Context, []BootstrapSeed) error                                                              = (*Node).Bootstrap
	_ func(*Node, context.Context, []net.Addr) error                                                                   = (*Node).BootstrapAddrs
	_ func(*Node, int) []net.Addr                                                                                      = (*Node).BootstrapCandidateAddrs
	_ func(*Node) error                                                                                                = (*Node).Close
	_ func(*Node) http.Handler                                                                                         = (*Node).DebugHTTPHandler
	_ func(*Node) DebugStats                                                                                           = (*Node).DebugStatsData
	_ func(*Node) int                                                                                                  = (*Node).EstimatedNetworkSize
	_ func(*Node, time.Time) (int, float64)                                                                            = (*Node).EstimatedNetworkSizeFiltered
	_ func(*Node, context.Context, net.Addr, a2al.NodeID) ([]protocol.NodeInfo, error)                                 = (*Node).FindNode
	_ func(*Node, context.Context, net.Addr, a2al.NodeID) (*protocol.SignedRecord, error)                              = (*Node).FindValue
	_ func(*Node, context.Context, net.Addr, a2al.NodeID, uint8) ([]protocol.SignedRecord, []protocol.NodeInfo, error) = (*Node).FindValueWithNodes
	_ func(*Node, []byte, net.Addr)                                                                                    = (*Node).InjectReceived
	_ func(*Node, a2al.NodeID) bool                                                                                    = (*Node).IsPunching
	_ func(*Node) net.Addr                                                                                             = (*Node).LocalAddr
	_ func(*Node, a2al.NodeID, uint8) []protocol.SignedRecord                                                          = (*Node).LocalStoreGet
	_ func(*Node, a2al.Address, uint8) []protocol.SignedRecord                                                         = (*Node).LocalStoreGetByAddress
	_ func(*Node, a2al.NodeID, uint8)                                                                                  = (*Node).LocalStoreInvalidate
	_ func(*Node, a2al.NodeID, protocol.SignedRecord) error                                                            = (*Node).LocalStorePut
	_ func(*Node) a2al.NodeID                                                                                          = (*Node).NodeID
	_ func(*Node, a2al.NodeID, a2al.Address, net.Addr, bool, bool, PunchFailReason)                                    = (*Node).OnPunchComplete
	_ func(*Node, a2al.NodeID) bool                                                                                    = (*Node).PeerAllowContact
	_ func(*Node, a2al.NodeID) PeerHealthState                                                                         = (*Node).PeerHealthOf
	_ func(*Node, net.Addr) time.Duration                                                                              = (*Node).PeerRTT
	_ func(*Node, context.Context, net.Addr) error                                                                     = (*Node).Ping
	_ func(*Node, context.Context, net.Addr) (*PeerIdentity, error)                                                    = (*Node).PingIdentity
	_ func(*Node, context.Context, protocol.SignedRecord) error                                                        = (*Node).PublishEndpointRecord
	_ func(*Node, context.Context, a2al.NodeID, protocol.SignedRecord) error                                           = (*Node).PublishMailboxRecord
	_ func(*Node, context.Context, a2al.NodeID, protocol.SignedRecord) error                                           = (*Node).PublishTopicRecord
	_ func(*Node, a2al.NodeID)                                                                                         = (*Node).RemoveRepSetsForPublisher
	_ func(*Node, a2al.NodeID, a2al.NodeID) int                                                                        = (*Node).RepSetSize
	_ func(*Node) net.IP                                                                                               = (*Node).SelfExtIP
	_ func(*Node, context.Context, net.Addr, []byte) (bool, error)                                                     = (*Node).SendNATProbeReq
	_ func(*Node, int)                                                                                                 = (*Node).SetMaxStoreKeys
	_ func(*Node, bool)                                                                                                = (*Node).SetPassiveRouting
	_ func(*Node, net.IP)                                                                                              = (*Node).SetSelfExtIP
	_ func(*Node)                                                                                                      = (*Node).Start
	_ func(*Node, string) (func(), error)                                                                              = (*Node).StartDebugHTTP
	_ func(*Node, context.Context, []net.Addr) error                                                                   = (*Node).StartWithBootstrap
	_ func(*Node, context.Context, net.Addr, a2al.NodeID, protocol.SignedRecord) (bool, error)                         = (*Node).StoreAt
	_ func(*Query, context.Context, a2al.NodeID, uint8) ([]protocol.SignedRecord, error)                               = (*Query).AggregateRecords
	_ func(*Query, context.Context, a2al.NodeID) ([]protocol.NodeInfo, error)                                          = (*Query).FindNode
	_ func(*Query, context.Context, a2al.NodeID, uint8) ([]protocol.SignedRecord, error)                               = (*Query).FindRecords
	_ func(*Query, context.Context, a2al.NodeID) (*protocol.EndpointRecord, error)                                     = (*Query).Resolve
	_ PunchTransport                                                                                                   = (*FakePunchTransport)(nil)
	_                                                                                                                  = []any{PunchPriorityHigh, PunchPriorityLow, PunchPriorityLowest, DefaultAlpha, DefaultStagger, DebugHTTPAddr,
		ErrNoEndpoint, ErrNoMatchingRecords, ErrStaleRecord, ErrStorePolicy, DefaultMaxTotalKeys,
		PunchFailNone, PunchFailNoAgent, PunchFailICETimeout, PunchFailOther,
		PeerHealthUnknown, PeerHealthGood, PeerHealthBad}
	_ = Query{Alpha: 1, Stagger: time.Second}
	_ = PeerIdentity{Address: a2al.Address{}, NodeID: a2al.NodeID{}, ObservedWire: nil}
	_ = BootstrapSeed{Addr: nil, Info: protocol.NodeInfo{}}
	_ = Config{Transport: nil, Keystore: nil, OnObservedAddr: nil, RecordAuth: nil, MaxStoreKeys: 0, Logger: nil, SeenPeersPath: "", PunchTransport: nil}
)
