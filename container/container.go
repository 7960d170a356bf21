package container

import (
	"fmt"
)

// Container is a message: six addressing header fields and an ordered list
// of named values. Names need not be unique; order is kept by every
// encoding, so a container that carries a list as repeated names survives
// a round trip.
//
// A Container is not safe for concurrent modification. Values that hold
// bytes, nested containers or arrays share memory with what they were built
// from (see Bytes, Nested, Array); use Clone for an independent copy. A
// container must not contain itself: encoders stop at MaxDepthLimit and
// report ErrTooDeep, but Clone and Equal would recurse forever.
type Container struct {
	// Addressing, as in the C++ value_container header: who sent the
	// message (SourceID, SourceSubID) and who it is for (TargetID,
	// TargetSubID).
	SourceID    string
	SourceSubID string
	TargetID    string
	TargetSubID string
	// MessageType tells the receiver how to read the values.
	MessageType string
	// Version is free text, conventionally "1.0.0.0" as in the C++ library.
	Version string
	// Values in order. It may be read and modified directly; Add, Set and
	// the getters are conveniences over it.
	Values []Value
}

// Add appends values in order, keeping any existing values with the same
// names (the C++ add semantics).
func (c *Container) Add(vs ...Value) { c.Values = append(c.Values, vs...) }

// Set makes v the only value named v.Name(): the first value with that name
// is replaced in place (keeping its position) and later ones are removed;
// if there is none, v is appended.
func (c *Container) Set(v Value) {
	found := false
	out := c.Values[:0]
	for _, x := range c.Values {
		if x.name != v.name {
			out = append(out, x)
			continue
		}
		if !found {
			out = append(out, v)
			found = true
		}
	}
	clear(c.Values[len(out):]) // drop references held by removed slots
	c.Values = out
	if !found {
		c.Values = append(c.Values, v)
	}
}

// Remove deletes every value with the given name and reports how many were
// removed.
func (c *Container) Remove(name string) int {
	out := c.Values[:0]
	for _, x := range c.Values {
		if x.name != name {
			out = append(out, x)
		}
	}
	n := len(c.Values) - len(out)
	clear(c.Values[len(out):])
	c.Values = out
	return n
}

// Get returns the first value with the given name and whether there was
// one.
func (c *Container) Get(name string) (Value, bool) {
	if c != nil {
		for i := range c.Values {
			if c.Values[i].name == name {
				return c.Values[i], true
			}
		}
	}
	return Value{}, false
}

// GetAll returns every value with the given name, in order, or nil if there
// is none. The returned slice is newly allocated.
func (c *Container) GetAll(name string) []Value {
	if c == nil {
		return nil
	}
	var out []Value
	for i := range c.Values {
		if c.Values[i].name == name {
			out = append(out, c.Values[i])
		}
	}
	return out
}

// lookup is Get with an error wrapping ErrNotFound for the typed getters.
func (c *Container) lookup(name string) (Value, error) {
	if v, ok := c.Get(name); ok {
		return v, nil
	}
	return Value{}, fmt.Errorf("%w: no value named %q", ErrNotFound, name)
}

// GetBool returns the first value named name as a bool. The error wraps
// ErrNotFound if there is no such value and ErrTypeMismatch if it has
// another type.
func (c *Container) GetBool(name string) (bool, error) {
	v, err := c.lookup(name)
	if err != nil {
		return false, err
	}
	return v.AsBool()
}

// GetInt16 is GetBool for int16.
func (c *Container) GetInt16(name string) (int16, error) {
	v, err := c.lookup(name)
	if err != nil {
		return 0, err
	}
	return v.AsInt16()
}

// GetUint16 is GetBool for uint16.
func (c *Container) GetUint16(name string) (uint16, error) {
	v, err := c.lookup(name)
	if err != nil {
		return 0, err
	}
	return v.AsUint16()
}

// GetInt32 is GetBool for int32.
func (c *Container) GetInt32(name string) (int32, error) {
	v, err := c.lookup(name)
	if err != nil {
		return 0, err
	}
	return v.AsInt32()
}

// GetUint32 is GetBool for uint32.
func (c *Container) GetUint32(name string) (uint32, error) {
	v, err := c.lookup(name)
	if err != nil {
		return 0, err
	}
	return v.AsUint32()
}

// GetInt64 is GetBool for int64.
func (c *Container) GetInt64(name string) (int64, error) {
	v, err := c.lookup(name)
	if err != nil {
		return 0, err
	}
	return v.AsInt64()
}

// GetUint64 is GetBool for uint64.
func (c *Container) GetUint64(name string) (uint64, error) {
	v, err := c.lookup(name)
	if err != nil {
		return 0, err
	}
	return v.AsUint64()
}

// GetFloat32 is GetBool for float32.
func (c *Container) GetFloat32(name string) (float32, error) {
	v, err := c.lookup(name)
	if err != nil {
		return 0, err
	}
	return v.AsFloat32()
}

// GetFloat64 is GetBool for float64.
func (c *Container) GetFloat64(name string) (float64, error) {
	v, err := c.lookup(name)
	if err != nil {
		return 0, err
	}
	return v.AsFloat64()
}

// GetBytes is GetBool for bytes. The slice is shared, not copied.
func (c *Container) GetBytes(name string) ([]byte, error) {
	v, err := c.lookup(name)
	if err != nil {
		return nil, err
	}
	return v.AsBytes()
}

// GetString is GetBool for string.
func (c *Container) GetString(name string) (string, error) {
	v, err := c.lookup(name)
	if err != nil {
		return "", err
	}
	return v.AsString()
}

// GetContainer is GetBool for a nested container (never nil on success).
func (c *Container) GetContainer(name string) (*Container, error) {
	v, err := c.lookup(name)
	if err != nil {
		return nil, err
	}
	return v.AsContainer()
}

// GetArray is GetBool for an array.
func (c *Container) GetArray(name string) ([]Value, error) {
	v, err := c.lookup(name)
	if err != nil {
		return nil, err
	}
	return v.AsArray()
}

// Swap exchanges the source and target fields in place, turning a received
// message's header into the header of a message back to its sender.
func (c *Container) Swap() {
	c.SourceID, c.TargetID = c.TargetID, c.SourceID
	c.SourceSubID, c.TargetSubID = c.TargetSubID, c.SourceSubID
}

// Reply returns a new, empty container addressed back to c's sender: its
// target is c's source (ID and sub ID), its source is c's target, its
// version is c's and its message type is messageType. It replaces the C++
// idiom of setting the response header by hand; set SourceID/SourceSubID
// afterwards if the replier's own address differs from the target it was
// reached at.
func (c *Container) Reply(messageType string) *Container {
	return &Container{
		SourceID:    c.TargetID,
		SourceSubID: c.TargetSubID,
		TargetID:    c.SourceID,
		TargetSubID: c.SourceSubID,
		MessageType: messageType,
		Version:     c.Version,
	}
}

// Clone returns a deep copy of c that shares no memory with it, so that
// either may be modified (including bytes payloads) without affecting the
// other.
func (c *Container) Clone() *Container {
	if c == nil {
		return nil
	}
	d := *c
	if c.Values != nil {
		d.Values = make([]Value, len(c.Values))
		for i := range c.Values {
			d.Values[i] = c.Values[i].clone()
		}
	}
	return &d
}

// Equal reports whether c and o have the same header and equal values in
// the same order (see Value.Equal). A nil container equals an empty one,
// matching how a nil nested container is encoded.
func (c *Container) Equal(o *Container) bool {
	if c == nil {
		c = &Container{}
	}
	if o == nil {
		o = &Container{}
	}
	return c.header() == o.header() && valuesEqual(c.Values, o.Values)
}

// header holds the six header strings in the order of the text format's
// field numbers 1..6 (target first), which is also the binary encoding's
// order.
type header [6]string

func (c *Container) header() header {
	return header{c.TargetID, c.TargetSubID, c.SourceID, c.SourceSubID, c.MessageType, c.Version}
}

func (c *Container) setHeader(h header) {
	c.TargetID, c.TargetSubID, c.SourceID, c.SourceSubID, c.MessageType, c.Version = h[0], h[1], h[2], h[3], h[4], h[5]
}
