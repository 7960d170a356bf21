package msgnet_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/frame"
)

// Handlers may block. Shutdown still returns when its context ends, and
// Close returns at once; the session whose handler is blocked ends when
// the handler returns, and Wait tells when that has happened. Before,
// both waited for the handler forever.
func TestStopWithBlockedHandler(t *testing.T) {
	engines(t, func(t *testing.T, opts ...msgnet.Option) {
		for _, stop := range []string{"Shutdown", "Close"} {
			t.Run(stop, func(t *testing.T) {
				srv := msgnet.NewServer("blocked", opts...)
				if err := srv.Start("127.0.0.1:0"); err != nil {
					t.Fatal(err)
				}
				inHandler, release := make(chan struct{}), make(chan struct{})
				ended := make(chan error, 1)
				srv.OnMessage(func(s *msgnet.Session, msg []byte) {
					close(inHandler)
					<-release
				})
				srv.OnDisconnect(func(s *msgnet.Session, reason error) { ended <- reason })
				r := dialRaw(t, srv.Addr().String())
				r.hello("c")
				r.send(frame.KindData, "block")
				select {
				case <-inHandler:
				case <-time.After(5 * time.Second):
					t.Fatal("the handler never ran")
				}

				returned := make(chan error, 1)
				go func() {
					if stop == "Close" {
						returned <- srv.Close()
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					defer cancel()
					returned <- srv.Shutdown(ctx)
				}()
				select {
				case err := <-returned:
					if stop == "Shutdown" && !errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("Shutdown: %v, want its context's error", err)
					}
				case <-time.After(5 * time.Second):
					close(release)
					t.Fatalf("%s did not return while a handler was blocked", stop)
				}
				select {
				case <-srv.Done():
					t.Fatal("the server says it stopped while a handler still runs")
				default:
				}
				close(release)
				select {
				case <-srv.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("the server did not finish once the handler returned")
				}
				select {
				case reason := <-ended:
					want := map[string]error{"Close": msgnet.ErrServerClosed, "Shutdown": msgnet.ErrServerShutdown}[stop]
					if !errors.Is(reason, want) {
						t.Fatalf("session ended with %v, want %v", reason, want)
					}
				default:
					t.Fatal("the disconnect handler had not run when Done closed")
				}
			})
		}
	})
}
