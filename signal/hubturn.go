package signal

// handleTURN answers a node's request for relay credentials. They name the
// connection's authenticated NodeID, so only that node's quota pays for
// them. Caller holds h.mu; the connection is authenticated.
func (c *hubConn) handleTURN() {
	a := c.h.cfg.TURN
	if a == nil || len(a.urls) == 0 {
		c.send(Frame{T: TTURN, Code: CodeNoTURN})
		return
	}
	cr := a.Issue(c.id)
	c.send(Frame{T: TTURN, TURNUser: cr.Username, TURNPass: cr.Password, TURNExp: cr.Expires.Unix(), TURNURLs: cr.URLs})
}
