package transporttest_test

import (
	"testing"

	"github.com/msgnet/msgnet/transport/transporttest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTCP runs the table over plain TCP: the behaviour the other
// transports are held to.
func TestTCP(t *testing.T) { transporttest.Run(t, transporttest.TCP) }
