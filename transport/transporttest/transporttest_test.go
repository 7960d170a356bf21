package transporttest_test

import (
	"testing"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/tlsconfig"
	"github.com/msgnet/msgnet/transport/transporttest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTCP runs the table over plain TCP on every engine: the behaviour
// the other transports are held to. Each engine reads with its own path
// and carries partial input between reads in its own way. The engines run
// in parallel (each case has servers of its own): most of a case's time
// is waiting, for an idle timeout or a linger to end.
func TestTCP(t *testing.T) {
	for _, e := range transporttest.Engines {
		t.Run(e.Name, func(t *testing.T) {
			t.Parallel()
			transporttest.Run(t, transporttest.TCP, e.Opts...)
		})
	}
}

// TestTLS runs the table over TLS (msgnet.WithTLS): the server reads a
// TLS connection on a goroutine of its own, and every trickled piece is a
// TLS record of its own.
func TestTLS(t *testing.T) {
	t.Parallel()
	files, err := tlsconfig.WriteTestFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	server, err := tlsconfig.New(files.ServerCert, files.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	client, err := tlsconfig.ClientConfig(files.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	transporttest.Run(t, transporttest.TLS(client), msgnet.WithTLS(server.Config()))
}
