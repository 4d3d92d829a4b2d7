// A SPDY/3.1 client of the Kubernetes streaming protocols that agentd's code
// did not write: Debian's Go and its packaged spdystream (the framing library
// client-go uses underneath, here without client-go). test_streaming.py
// builds it (GO111MODULE=off, GOPATH=/usr/share/gocode) and runs it:
//
//	spdy_client exec URL        v4.channel.k8s.io: its stdin to the stdin
//	                            stream (half-closed at EOF), stdout and stderr
//	                            copied, the error stream's Status printed on
//	                            the last line of stderr; exits with the code
//	                            of the Status (0 Success)
//	spdy_client forward URL PORT
//	                            portforward.k8s.io: one data + error stream
//	                            pair for PORT, its stdin sent (then
//	                            half-closed), what comes back on stdout, the
//	                            error stream on stderr (exit 3 if non-empty)
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "spdy_client: "+format+"\n", a...)
	os.Exit(2)
}

// upgrade asks for SPDY/3.1 with protocol and returns the connection once the
// server switched.
func upgrade(rawURL, protocol string) net.Conn {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" {
		fail("bad URL %q", rawURL)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		fail("dial: %v", err)
	}
	req, _ := http.NewRequest("POST", rawURL, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	req.Header.Set("X-Stream-Protocol-Version", protocol)
	if err := req.Write(conn); err != nil {
		fail("request: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		fail("response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		fail("HTTP %d: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Stream-Protocol-Version"); got != protocol {
		fail("protocol %q, not %q", got, protocol)
	}
	if br.Buffered() > 0 {
		fail("bytes after the 101 before any stream")
	}
	return conn
}

func open(conn *spdystream.Connection, h http.Header) *spdystream.Stream {
	s, err := conn.CreateStream(h, nil, false)
	if err != nil {
		fail("stream %v: %v", h, err)
	}
	if err := s.WaitTimeout(10 * time.Second); err != nil {
		fail("stream %v: no reply: %v", h, err)
	}
	return s
}

type status struct {
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Details struct {
		Causes []struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"causes"`
	} `json:"details"`
}

func execCmd(rawURL string) {
	conn, err := spdystream.NewConnection(upgrade(rawURL, "v4.channel.k8s.io"), false)
	if err != nil {
		fail("spdy: %v", err)
	}
	go conn.Serve(spdystream.NoOpStreamHandler)
	errStream := open(conn, http.Header{"Streamtype": {"error"}})
	stdin := open(conn, http.Header{"Streamtype": {"stdin"}})
	stdout := open(conn, http.Header{"Streamtype": {"stdout"}})
	stderr := open(conn, http.Header{"Streamtype": {"stderr"}})
	go func() {
		io.Copy(stdin, os.Stdin)
		stdin.Close() // half-close: the process's stdin ends
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { io.Copy(os.Stdout, stdout); wg.Done() }()
	go func() { io.Copy(os.Stderr, stderr); wg.Done() }()
	raw, _ := io.ReadAll(errStream)
	wg.Wait()
	conn.Close()
	fmt.Fprintf(os.Stderr, "%s\n", raw)
	var st status
	if err := json.Unmarshal(raw, &st); err != nil {
		fail("status %q: %v", raw, err)
	}
	if st.Status == "Success" {
		os.Exit(0)
	}
	for _, c := range st.Details.Causes {
		if st.Reason == "NonZeroExitCode" && c.Reason == "ExitCode" {
			code, _ := strconv.Atoi(c.Message)
			os.Exit(code)
		}
	}
	os.Exit(1)
}

func forward(rawURL, port string) {
	conn, err := spdystream.NewConnection(upgrade(rawURL, "portforward.k8s.io"), false)
	if err != nil {
		fail("spdy: %v", err)
	}
	go conn.Serve(spdystream.NoOpStreamHandler)
	h := http.Header{"Streamtype": {"error"}, "Port": {port}, "Requestid": {"0"}}
	errStream := open(conn, h)
	errStream.Close() // as client-go: nothing is written to it
	h = http.Header{"Streamtype": {"data"}, "Port": {port}, "Requestid": {"0"}}
	data := open(conn, h)
	var wg sync.WaitGroup
	wg.Add(1)
	var errText []byte
	go func() { errText, _ = io.ReadAll(errStream); wg.Done() }()
	go func() {
		io.Copy(data, os.Stdin)
		data.Close()
	}()
	io.Copy(os.Stdout, data)
	wg.Wait()
	conn.Close()
	if len(errText) > 0 {
		fmt.Fprintf(os.Stderr, "%s\n", errText)
		os.Exit(3)
	}
}

func main() {
	switch {
	case len(os.Args) == 3 && os.Args[1] == "exec":
		execCmd(os.Args[2])
	case len(os.Args) == 4 && os.Args[1] == "forward":
		forward(os.Args[2], os.Args[3])
	default:
		fail("usage: spdy_client exec URL | forward URL PORT")
	}
}
