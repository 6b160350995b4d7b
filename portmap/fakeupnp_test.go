package portmap

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeIGD is an in-process UPnP IGDv1 on loopback: an SSDP responder (unicast)
// and an HTTP server with the device description and a WANIPConnection:1
// SOAP endpoint over a port-mapping table.
type fakeIGD struct {
	t     *testing.T
	ssdp  *net.UDPConn
	http  *httptest.Server
	extIP string

	mu        sync.Mutex
	maps      map[uint16]igdEntry // external port -> entry
	permOnly  bool                // answer 725 to non-zero leases
	adds      int
	deletes   int
	lastLease uint32
	searches  int
}

type igdEntry struct {
	client string
	port   uint16
	lease  uint32
}

const wanIP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"

func newFakeIGD(t *testing.T) *fakeIGD {
	t.Helper()
	f := &fakeIGD{t: t, extIP: "203.0.113.9", maps: map[uint16]igdEntry{}}
	f.http = httptest.NewServer(http.HandlerFunc(f.serveHTTP))
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f.ssdp = c
	done := make(chan struct{})
	go func() { defer close(done); f.serveSSDP() }()
	t.Cleanup(func() { _ = c.Close(); <-done; f.http.Close() })
	return f
}

func (f *fakeIGD) addr() *net.UDPAddr { return f.ssdp.LocalAddr().(*net.UDPAddr) }

func (f *fakeIGD) entry(ext uint16) (igdEntry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.maps[ext]
	return e, ok
}

func (f *fakeIGD) counts() (adds, deletes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.adds, f.deletes
}

func (f *fakeIGD) serveSSDP() {
	buf := make([]byte, 2048)
	for {
		n, from, err := f.ssdp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		req := string(buf[:n])
		if !strings.HasPrefix(req, "M-SEARCH") || !strings.Contains(req, "InternetGatewayDevice:1") {
			continue
		}
		f.mu.Lock()
		f.searches++
		f.mu.Unlock()
		resp := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"USN: uuid:fake::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: " + f.http.URL + "/rootDesc.xml\r\n\r\n"
		_, _ = f.ssdp.WriteToUDP([]byte(resp), from)
	}
}

const fakeRootDesc = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
 <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
 <friendlyName>fake</friendlyName><UDN>uuid:fake</UDN>
 <deviceList><device>
  <deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><UDN>uuid:fake-wan</UDN>
  <deviceList><device>
   <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><UDN>uuid:fake-conn</UDN>
   <serviceList><service>
    <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
    <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
    <SCPDURL>/scpd.xml</SCPDURL><controlURL>/ctl</controlURL><eventSubURL>/evt</eventSubURL>
   </service></serviceList>
  </device></deviceList>
 </device></deviceList>
</device>
</root>`

func (f *fakeIGD) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/rootDesc.xml":
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, fakeRootDesc)
	case "/ctl":
		action, args, err := parseSOAP(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out, code := f.act(action, args)
		w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
		var b bytes.Buffer
		b.WriteString(`<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>`)
		if code != 0 {
			fmt.Fprintf(&b, `<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>e</errorDescription></UPnPError></detail></s:Fault>`, code)
			b.WriteString(`</s:Body></s:Envelope>`)
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write(b.Bytes())
			return
		}
		fmt.Fprintf(&b, `<u:%sResponse xmlns:u="%s">`, action, wanIP1)
		for k, v := range out {
			fmt.Fprintf(&b, "<%s>%s</%s>", k, v, k)
		}
		fmt.Fprintf(&b, `</u:%sResponse></s:Body></s:Envelope>`, action)
		_, _ = w.Write(b.Bytes())
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeIGD) act(action string, a map[string]string) (map[string]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	port := func(k string) uint16 { p, _ := strconv.Atoi(a[k]); return uint16(p) }
	switch action {
	case "GetExternalIPAddress":
		return map[string]string{"NewExternalIPAddress": f.extIP}, 0
	case "GetSpecificPortMappingEntry":
		e, ok := f.maps[port("NewExternalPort")]
		if !ok {
			return nil, upnpNoSuchEntry
		}
		return map[string]string{"NewInternalPort": strconv.Itoa(int(e.port)), "NewInternalClient": e.client,
			"NewEnabled": "1", "NewPortMappingDescription": "x", "NewLeaseDuration": strconv.Itoa(int(e.lease))}, 0
	case "AddPortMapping":
		ext := port("NewExternalPort")
		e := igdEntry{client: a["NewInternalClient"], port: port("NewInternalPort")}
		lease, _ := strconv.Atoi(a["NewLeaseDuration"])
		if f.permOnly && lease != 0 {
			return nil, upnpOnlyPermanentLease
		}
		if old, ok := f.maps[ext]; ok && (old.client != e.client || old.port != e.port) {
			return nil, upnpConflict
		}
		e.lease = uint32(lease)
		f.maps[ext] = e
		f.adds++
		f.lastLease = uint32(lease)
		return map[string]string{}, 0
	case "DeletePortMapping":
		ext := port("NewExternalPort")
		if _, ok := f.maps[ext]; !ok {
			return nil, upnpNoSuchEntry
		}
		delete(f.maps, ext)
		f.deletes++
		return map[string]string{}, 0
	}
	return nil, 401
}

// parseSOAP returns the action element's name and its children's text.
func parseSOAP(r io.Reader) (string, map[string]string, error) {
	d := xml.NewDecoder(io.LimitReader(r, 64<<10))
	var action, cur string
	args := map[string]string{}
	inBody := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch {
			case t.Name.Local == "Body":
				inBody = true
			case inBody && action == "":
				action = t.Name.Local
			case action != "":
				cur = t.Name.Local
				args[cur] = ""
			}
		case xml.CharData:
			if cur != "" {
				args[cur] += string(t)
			}
		case xml.EndElement:
			cur = ""
		}
	}
	if action == "" {
		return "", nil, fmt.Errorf("no action")
	}
	return action, args, nil
}
