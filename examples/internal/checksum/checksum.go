// Package checksum is the pipeline examples' user filter: it appends a
// CRC-32C of every DATA payload on the way out and checks and strips it on
// the way in, so a payload damaged after the filter (by a buggy proxy, say)
// is refused rather than handed to the application. Both sides install it
// (msgnet.WithFilters); the payload pipeline runs it before compression
// and encryption going out, after them coming in.
package checksum

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"sync/atomic"

	"github.com/msgnet/msgnet/pipeline"
)

var table = crc32.MakeTable(crc32.Castagnoli)

// ErrMismatch is a payload whose checksum does not match.
var ErrMismatch = errors.New("checksum: payload does not match its CRC-32C")

// Filter returns the checksum filter; checked counts the payloads it has
// verified, for the examples to print.
func Filter(checked *atomic.Uint64) pipeline.Filter {
	return pipeline.Funcs(
		func(dst, p []byte) ([]byte, error) {
			dst = append(dst, p...)
			return binary.BigEndian.AppendUint32(dst, crc32.Checksum(p, table)), nil
		},
		func(dst, p []byte) ([]byte, error) {
			if len(p) < 4 {
				return dst, ErrMismatch
			}
			body, sum := p[:len(p)-4], binary.BigEndian.Uint32(p[len(p)-4:])
			if crc32.Checksum(body, table) != sum {
				return dst, ErrMismatch
			}
			if checked != nil {
				checked.Add(1)
			}
			return append(dst, body...), nil
		})
}
