package web_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/msgnet/msgnet"
	"github.com/msgnet/msgnet/internal/testenv"
	"github.com/msgnet/msgnet/managed"
	"github.com/msgnet/msgnet/web"
)

// TestBrowserRecovered drives the page's acknowledged delivery in
// headless Chromium: the chat subscribes to the lobby's stream; the test
// cuts its session off and holds its reconnection while the group gets
// messages; when it is let back, the page shows them marked recovered,
// with their count. The second time more than the stream keeps (5) is
// published meanwhile, and the page says which messages were lost. A
// message the page publishes to the stream is shown stored, and comes
// back on the subscription. A screenshot is kept in artifacts/.
func TestBrowserRecovered(t *testing.T) {
	needChromium(t)
	srv := msgnet.NewServer("web_test", msgnet.WithLogger(slog.New(slog.DiscardHandler)),
		msgnet.WithRetention(msgnet.Retention{MaxMessages: 5}))
	managed.Install(srv)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	// The page's WebSocket goes through a gate, which holds its
	// reconnections while shut; the rest of the page does not.
	gate := &testenv.Gate{}
	h := web.Handler(srv, web.WithChat())
	mux := http.NewServeMux()
	mux.Handle("/ws", gate.Handler(h))
	mux.Handle("/", h)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	t.Cleanup(gate.Open) // first: no request stays held

	lobby := msgnet.GroupStream("lobby")
	publish := func(texts ...string) {
		t.Helper()
		for _, s := range texts {
			if _, err := srv.Publish(lobby, []byte(s)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// cutOff ends the page's session and holds its reconnection until
	// the gate opens.
	cutOff := func() {
		t.Helper()
		gate.Shut()
		s, ok := srv.SessionByClientID("browser")
		if !ok {
			t.Fatal("no session for the page")
		}
		s.Disconnect("cut off by the test")
		eventually(t, "the page's session ends", func() (bool, string) {
			_, ok := srv.SessionByClientID("browser")
			return !ok, "still open"
		})
	}

	b := newBrowser(t)
	b.do("open the page", chromedp.Navigate(hs.URL), chromedp.WaitVisible(chromedp.ID("connect")))
	b.do("connect",
		clear("client-id"),
		chromedp.SendKeys(chromedp.ID("client-id"), "browser"),
		chromedp.Click(chromedp.ID("connect")))
	b.waitFor("the chat is connected", `document.querySelector('#chat-status').dataset.state === 'open'`)
	b.do("subscribe to the lobby's stream", chromedp.Click(chromedp.ID("subscribe")))
	b.waitFor("the subscription", systemSays("subscribed to group:lobby (acknowledged delivery, from #1)"))
	b.waitFor("the button to offer unsubscribing", `document.querySelector('#subscribe').textContent === 'Unsubscribe'`)

	publish("live one")
	b.waitFor("a live message of the stream", streamLines("", "live one"))

	// Away while three come: recovered on return.
	cutOff()
	publish("away 1", "away 2", "away 3")
	gate.Open()
	b.waitFor("the messages recovered", streamLines(".recovered", "away 1", "away 2", "away 3"))
	b.waitFor("their count", systemSays("recovered 3 messages of group:lobby after reconnect"))

	// Away while eight come, of which the stream keeps the last five
	// (offsets 8 to 12): 5 to 7 are lost, and the page says so.
	cutOff()
	publish("gone 1", "gone 2", "gone 3", "gone 4", "gone 5", "gone 6", "gone 7", "gone 8")
	gate.Open()
	b.waitFor("the continuity loss", `(() => {
		const l = document.querySelector('#transcript li.lost');
		return l !== null && l.dataset.missed === '5' && l.dataset.next === '8'
			&& l.querySelector('.text').textContent === "continuity lost on group:lobby: messages 5 to 7 left the server's retention before they could be delivered; going on from 8";
	})()`)
	b.waitFor("what the stream kept, recovered", streamLines(".recovered", "away 1", "away 2", "away 3", "gone 4", "gone 5", "gone 6", "gone 7", "gone 8"))
	b.waitFor("their count", systemSays("recovered 5 messages of group:lobby after reconnect"))
	b.waitFor("the page's count of recovered messages", `document.querySelector('#transcript').dataset.recovered === '8'`)
	b.waitFor("nothing else in the stream's lines", streamLines("", "live one", "away 1", "away 2", "away 3", "gone 4", "gone 5", "gone 6", "gone 7", "gone 8"))

	// The page publishes to the stream: stored, and delivered back.
	b.do("publish from the page",
		chromedp.SetValue(chromedp.ID("send-mode"), "publish"),
		chromedp.SendKeys(chromedp.ID("message"), "from the page"),
		chromedp.Click(chromedp.ID("send")))
	b.waitFor("the publish stored", `[...document.querySelectorAll('#transcript li.out')].some((li) =>
		li.querySelector('.text').textContent === 'from the page' && li.dataset.publish === 'stored')`)
	b.waitFor("the publish delivered on the subscription", `[...document.querySelectorAll('#transcript li.stream')].at(-1).querySelector('.text').textContent === 'from the page'`)

	b.screenshot("browser-recovered.png")
	b.checkConsole()
}

// streamLines is true when the transcript's lines of the stream matching
// the class selector (e.g. ".recovered"; "" for all) have exactly texts.
func streamLines(class string, texts ...string) string {
	want := "["
	for i, s := range texts {
		if i > 0 {
			want += ","
		}
		want += strconv.Quote(s)
	}
	want += "]"
	return fmt.Sprintf(`JSON.stringify([...document.querySelectorAll('#transcript li.stream%s .text')].map((e) => e.textContent)) === JSON.stringify(%s)`, class, want)
}

// systemSays is true when a line of the page's own (li.sys) says text.
func systemSays(text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#transcript li.sys .text')].some((e) => e.textContent === %s)`, strconv.Quote(text))
}
