// Package gid tells goroutines apart: Current returns a value that is
// the same for every call on one goroutine and different between goroutines
// alive at the same time (the address of the runtime's goroutine
// descriptor, read from where the runtime keeps it).
//
// It exists for one fast path: a session's event loop recognising that a
// send comes from itself, running a handler, so that the send needs no
// lock (see Session.enqueue and netpoll.Poller.Owner). It is not a goroutine id: a value is reused
// once its goroutine has exited, and it means nothing outside this process.
// On architectures without the assembly, Supported is false and Current
// returns 0.
package gid
