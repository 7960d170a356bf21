// Package container is msgnet's structured payload: a message with six
// addressing header fields and an ordered list of named, typed values,
// ported from the C++ library's value_container.
//
// Values are null, bool, int16, uint16, int32, uint32, int64, uint64,
// float32, float64, bytes, string, nested container and array. A Value is a
// small struct with a type tag, not an interface, so a container's values
// take one allocation. Typed getters return an error (ErrNotFound,
// ErrTypeMismatch) rather than a zero value, so a wrong or missing field is
// noticed where it is read.
//
// There are three encodings, selected by Format:
//
//   - Binary (Marshal, AppendBinary, Unmarshal) is the wire default: exact
//     for every value, length-prefixed, versioned by its first byte, and
//     safe on hostile input: every declared length and count is checked
//     against the remaining input and the DecodeOptions limits before
//     anything is allocated.
//   - Text (AppendText, ParseText) is the C++ original's
//     "@header={...};@data={...};" format, for talking to C++ peers. It has
//     no array type and reserves some character sequences, so writing fails
//     with ErrNotRepresentable where it could not be read back exactly.
//   - JSON (AppendJSON, ParseJSON) is for logs, debugging and web clients;
//     it keeps each value's type next to it.
//
// Convert translates between them. docs/CONTAINER.md specifies each format
// byte by byte.
//
// Usage:
//
//	req := &container.Container{SourceID: "client", TargetID: "server", MessageType: "login"}
//	req.Add(container.String("username", "ada"), container.Int64("timestamp", time.Now().Unix()))
//	wire, err := req.Marshal()
//	...
//	got, err := container.Unmarshal(wire)
//	if err != nil {
//		return err // a *DecodeError saying what is wrong and where
//	}
//	user, err := got.GetString("username")
//	if errors.Is(err, container.ErrNotFound) {
//		...
//	}
//	resp := got.Reply("response") // addressed back to the sender
//	resp.Add(container.String("status", "success"))
package container
