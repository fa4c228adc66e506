// wanproxy: a TCP proxy that adds a one-way delay and an optional bandwidth cap, for benchmarks/wan.py.
//
//	wanproxy proxy -map 127.0.0.1:PORT=127.0.0.1:UPSTREAM [-map ...] -delay-ms 50 [-rate-bytes 125000000]
//	wanproxy sink                      # bulk-transfer sink: prints its port, counts bytes, acks each connection
//	wanproxy send -to ADDR -bytes N    # bulk-transfer sender: prints JSON with MB/s
//
// The delay is applied like netem's: every chunk read from one side is stamped with its arrival time and
// written to the other side at arrival + delay, while the reader goes on reading, so many chunks are in
// flight at once (the proxy holds up to -buffer-bytes per direction of each connection, which acts as the
// TCP window across the simulated WAN). With -rate-bytes, each direction of the whole proxy (all its
// connections, as one WAN link) is a token bucket paced at that rate: a chunk's transmission ends
// n/rate after the previous chunk's (or its arrival, if later), and it is delivered one delay after that.
// -delay-ms is one way: a round trip adds twice it. Standard library only.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

const chunkSize = 1 << 20

type chunk struct {
	buf  []byte
	n    int
	due  time.Time
	last bool // EOF from the reader: half-close the destination after the earlier chunks
}

// bucket paces one direction of the proxy at rate bytes per second (rate 0: no cap).
type bucket struct {
	mu   sync.Mutex
	rate float64
	next time.Time
}

func (b *bucket) transmitted(arrival time.Time, n int) time.Time {
	if b.rate <= 0 {
		return arrival
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next.Before(arrival) {
		b.next = arrival
	}
	b.next = b.next.Add(time.Duration(float64(n) / b.rate * float64(time.Second)))
	return b.next
}

// budget bounds the bytes one direction of one connection holds in flight.
type budget struct {
	mu    sync.Mutex
	cond  *sync.Cond
	free  int
	limit int
}

func newBudget(limit int) *budget {
	b := &budget{free: limit, limit: limit}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *budget) take(n int) {
	b.mu.Lock()
	for b.free < n && b.free < b.limit {
		b.cond.Wait()
	}
	b.free -= n
	b.mu.Unlock()
}

func (b *budget) give(n int) {
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
	b.cond.Signal()
}

var pool = sync.Pool{New: func() any { return make([]byte, chunkSize) }}

type settings struct {
	delay    time.Duration
	buffer   int
	sockbuf  int
	up, down *bucket
}

func tune(c net.Conn, s *settings) {
	tc := c.(*net.TCPConn)
	tc.SetNoDelay(true)
	if s.sockbuf > 0 {
		tc.SetReadBuffer(s.sockbuf)
		tc.SetWriteBuffer(s.sockbuf)
	}
}

// pipe moves bytes src -> dst with the delay and the bucket; it returns when src is done and the last
// chunk was written (or either side failed).
func pipe(src, dst *net.TCPConn, s *settings, pace *bucket) {
	queue := make(chan chunk, 1<<16)
	room := newBudget(s.buffer)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range queue {
			if c.last {
				dst.CloseWrite()
				return
			}
			if wait := time.Until(c.due); wait > 0 {
				time.Sleep(wait)
			}
			_, err := dst.Write(c.buf[:c.n])
			if len(c.buf) == chunkSize {
				pool.Put(c.buf)
			}
			room.give(c.n)
			if err != nil {
				src.Close()
				dst.Close()
				for c := range queue { // let the reader finish (it may wait for room)
					room.give(c.n)
				}
				return
			}
		}
	}()
	for {
		buf := pool.Get().([]byte)
		n, err := src.Read(buf)
		if n > 0 {
			arrival := time.Now()
			if n < chunkSize/8 { // a small read (a request): hold its bytes, not a whole chunk, while delayed
				small := make([]byte, n)
				copy(small, buf[:n])
				pool.Put(buf)
				buf = small
			}
			room.take(n)
			queue <- chunk{buf: buf, n: n, due: pace.transmitted(arrival, n).Add(s.delay)}
		} else {
			pool.Put(buf)
		}
		if err != nil {
			queue <- chunk{last: true, due: time.Now().Add(s.delay)}
			close(queue)
			break
		}
	}
	<-done
}

func serve(listener net.Listener, upstream string, s *settings) {
	for {
		client, err := listener.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			return
		}
		go func() {
			server, err := net.Dial("tcp", upstream)
			if err != nil {
				fmt.Fprintln(os.Stderr, "dial", upstream, err)
				client.Close()
				return
			}
			tune(client, s)
			tune(server, s)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); pipe(client.(*net.TCPConn), server.(*net.TCPConn), s, s.up) }()
			go func() { defer wg.Done(); pipe(server.(*net.TCPConn), client.(*net.TCPConn), s, s.down) }()
			wg.Wait()
			client.Close()
			server.Close()
		}()
	}
}

type maps []string

func (m *maps) String() string     { return strings.Join(*m, ",") }
func (m *maps) Set(v string) error { *m = append(*m, v); return nil }

func runProxy(args []string) {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	var pairs maps
	fs.Var(&pairs, "map", "LISTEN=UPSTREAM (repeatable)")
	delayMs := fs.Float64("delay-ms", 0, "one-way delay in milliseconds (a round trip adds twice this)")
	rate := fs.Float64("rate-bytes", 0, "bandwidth cap per direction in bytes per second, 0 = none")
	buffer := fs.Int("buffer-bytes", 256<<20, "bytes in flight per direction of one connection")
	sockbuf := fs.Int("sockbuf", 0, "SO_RCVBUF/SO_SNDBUF on both sides, 0 = kernel autotuning")
	fs.Parse(args)
	s := &settings{delay: time.Duration(*delayMs * float64(time.Millisecond)), buffer: *buffer, sockbuf: *sockbuf, up: &bucket{rate: *rate}, down: &bucket{rate: *rate}}
	var listening []string
	for _, p := range pairs {
		listen, upstream, ok := strings.Cut(p, "=")
		if !ok {
			fmt.Fprintln(os.Stderr, "bad -map", p)
			os.Exit(2)
		}
		l, err := net.Listen("tcp", listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, "listen:", err)
			os.Exit(1)
		}
		listening = append(listening, l.Addr().String())
		go serve(l, upstream, s)
	}
	out, _ := json.Marshal(map[string]any{"listening": listening, "delay_ms": *delayMs, "rate_bytes": *rate})
	fmt.Println(string(out))
	select {}
}

func runSink(args []string) {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	sockbuf := fs.Int("sockbuf", 0, "SO_RCVBUF, 0 = autotuning")
	fs.Parse(args)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(l.Addr().String())
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if *sockbuf > 0 {
				c.(*net.TCPConn).SetReadBuffer(*sockbuf)
			}
			buf := make([]byte, 1<<20)
			var total uint64
			for {
				n, err := c.Read(buf)
				total += uint64(n)
				if err == io.EOF {
					break
				}
				if err != nil {
					return
				}
			}
			var ack [8]byte
			binary.BigEndian.PutUint64(ack[:], total)
			c.Write(ack[:])
		}()
	}
}

func runSend(args []string) {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	to := fs.String("to", "", "address")
	size := fs.Int64("bytes", 1<<30, "bytes to send")
	sockbuf := fs.Int("sockbuf", 0, "SO_SNDBUF, 0 = autotuning")
	fs.Parse(args)
	started := time.Now()
	c, err := net.Dial("tcp", *to)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tc := c.(*net.TCPConn)
	if *sockbuf > 0 {
		tc.SetWriteBuffer(*sockbuf)
	}
	buf := make([]byte, 1<<20)
	for sent := int64(0); sent < *size; {
		n := int64(len(buf))
		if *size-sent < n {
			n = *size - sent
		}
		w, err := tc.Write(buf[:n])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sent += int64(w)
	}
	tc.CloseWrite()
	var ack [8]byte
	if _, err := io.ReadFull(tc, ack[:]); err != nil {
		fmt.Fprintln(os.Stderr, "no ack:", err)
		os.Exit(1)
	}
	seconds := time.Since(started).Seconds()
	got := binary.BigEndian.Uint64(ack[:])
	out, _ := json.Marshal(map[string]any{"bytes_sent": *size, "bytes_received": got, "seconds": seconds, "mb_s": float64(got) / 1e6 / seconds})
	fmt.Println(string(out))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wanproxy proxy|sink|send ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "proxy":
		runProxy(os.Args[2:])
	case "sink":
		runSink(os.Args[2:])
	case "send":
		runSend(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
