package checksum_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/examples/internal/checksum"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The pipeline examples' setup end to end: the checksum filter, compression
// and encryption negotiated, the handler seeing plain payloads both ways.
func TestPipelineExample(t *testing.T) {
	psk := []byte("an example key, not for production use")
	var srvChecked, cliChecked atomic.Uint64
	srv := msgnet.NewServer("pipeline_server", msgnet.WithFilters(checksum.Filter(&srvChecked)),
		msgnet.WithCompression("zstd", "s2"), msgnet.WithCompressionThreshold(64), msgnet.WithEncryption(psk))
	srv.OnMessage(func(s *msgnet.Session, msg []byte) { s.SendString("processed: " + strings.ToUpper(string(msg))) })
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	c := msgnet.NewClient("pipeline_client", msgnet.WithFilters(checksum.Filter(&cliChecked)),
		msgnet.WithCompression("zstd"), msgnet.WithEncryption(psk))
	got := make(chan string, 2)
	c.OnMessage(func(m []byte) { got <- string(m) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx, srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	long := strings.Repeat("compressible text ", 100)
	for _, m := range []string{"hello", long} {
		c.SendString(m)
		select {
		case r := <-got:
			if r != "processed: "+strings.ToUpper(m) {
				t.Fatalf("got %.40q", r)
			}
		case <-ctx.Done():
			t.Fatal("no reply")
		}
	}
	if srvChecked.Load() != 2 || cliChecked.Load() != 2 {
		t.Fatalf("checksums verified: server %d, client %d", srvChecked.Load(), cliChecked.Load())
	}
}

func TestFilterRefusesDamage(t *testing.T) {
	f := checksum.Filter(nil)
	out, _ := f.Outbound(nil, []byte("payload"))
	out[0] ^= 1
	if _, err := f.Inbound(nil, out); !errors.Is(err, checksum.ErrMismatch) {
		t.Fatalf("damaged payload: %v", err)
	}
	out[0] ^= 1
	if in, err := f.Inbound(nil, out); err != nil || !bytes.Equal(in, []byte("payload")) {
		t.Fatalf("%q %v", in, err)
	}
}
