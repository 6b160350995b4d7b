package main

import "github.com/a2alnode/a2al/host"

// checkTURN validates one --turn entry (the flag keeps its text).
func checkTURN(s string) (string, error) {
	_, err := host.ParseTURNFlag(s)
	return s, err
}

// turnServers are the parsed --turn entries (validated when parsed).
func (c *netFlags) turnServers() []host.TURNServer {
	var out []host.TURNServer
	for _, s := range c.turn {
		if t, err := host.ParseTURNFlag(s); err == nil {
			out = append(out, t)
		}
	}
	return out
}
