package loadgen

import (
	"os"
	"testing"
	"time"
)

// ProcRunWait reads how long a process waited for a CPU from /proc.
func TestProcRunWait(t *testing.T) {
	d, err := ProcRunWait(os.Getpid())
	if err != nil || d < 0 {
		t.Fatalf("ProcRunWait(self) = %v, %v", d, err)
	}
	if _, err := ProcRunWait(1 << 30); err == nil {
		t.Error("ProcRunWait of no process did not fail")
	}
	if w := cpuWait(runWaitSample{load: time.Second, server: -1}, runWaitSample{load: 3 * time.Second, server: -1}); w == nil || w.Load != 2 || w.Server != 0 {
		t.Errorf("cpuWait = %+v", w)
	}
}
