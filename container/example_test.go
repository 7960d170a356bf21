package container_test

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/msgnet/msgnet/container"
)

func Example() {
	req := &container.Container{SourceID: "client", SourceSubID: "c7", TargetID: "server", MessageType: "login", Version: "1.0.0.0"}
	req.Add(container.String("username", "ada"), container.Int64("timestamp", 1754500000))

	wire, err := req.Marshal() // binary, the wire default
	if err != nil {
		panic(err)
	}

	got, err := container.Unmarshal(wire)
	if err != nil {
		panic(err)
	}
	user, _ := got.GetString("username")
	ts, _ := got.GetInt64("timestamp")
	fmt.Println(user, ts, len(wire), "bytes")

	resp := got.Reply("response")
	resp.Add(container.String("status", "success"))
	fmt.Printf("%s/%s -> %s/%s\n", resp.SourceID, resp.SourceSubID, resp.TargetID, resp.TargetSubID)
	// Output:
	// ada 1754500000 67 bytes
	// server/ -> client/c7
}

func ExampleContainer_GetString() {
	c := &container.Container{}
	c.Add(container.Int32("count", 42))

	_, err := c.GetString("count")
	fmt.Println(errors.Is(err, container.ErrTypeMismatch), err)
	_, err = c.GetString("name")
	fmt.Println(errors.Is(err, container.ErrNotFound), err)
	// Output:
	// true container: type mismatch: value "count" is int32, not string
	// true container: value not found: no value named "name"
}

func ExampleParseText() {
	in := `@header={[1,srv];[2,];[3,c1];[4,];[5,chat];[6,1.0.0.0];};@data={[count,5,42];[msg,11,hi</0x0C;>there];};`
	c, err := container.ParseText([]byte(in))
	if err != nil {
		panic(err)
	}
	msg, _ := c.GetString("msg")
	fmt.Printf("%s from %s: %q\n", c.MessageType, c.SourceID, msg)

	out, _ := c.MarshalText()
	fmt.Println(string(out) == in)
	// Output:
	// chat from c1: "hi there"
	// true
}

func ExampleContainer_MarshalJSON() {
	c := &container.Container{MessageType: "stats"}
	c.Add(container.Int32("count", 42), container.Uint64("bytes", 1<<60), container.Bytes("raw", []byte{0, 1}))
	js, _ := c.MarshalJSON()
	fmt.Println(string(js))
	// Output:
	// {"header":{"target_id":"","target_sub_id":"","source_id":"","source_sub_id":"","message_type":"stats","version":""},"values":[{"name":"count","type":"int32","value":42},{"name":"bytes","type":"uint64","value":"1152921504606846976"},{"name":"raw","type":"bytes","value":"AAE="}]}
}

func ExampleConvert() {
	in := strings.NewReader(`@data={[ok,1,true];};`)
	if err := container.Convert(in, os.Stdout, container.Text, container.JSON); err != nil {
		fmt.Println(err)
	}
	fmt.Println()

	err := container.Convert(strings.NewReader(`@data={[n,5,forty];};`), os.Stdout, container.Text, container.JSON)
	fmt.Println(err)
	// Output:
	// {"header":{"target_id":"","target_sub_id":"","source_id":"","source_sub_id":"","message_type":"","version":""},"values":[{"name":"ok","type":"bool","value":true}]}
	// container: cannot decode text at byte 7: item "n": bad value "forty" for code 5: strconv.ParseInt: parsing "forty": invalid syntax
}
