package runner

import (
	"net"
	"strings"
	"testing"
)

func TestParseListen(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: ":8080", want: "0.0.0.0:8080"},
		{in: "127.0.0.1:80, :9090", want: "127.0.0.1:80 0.0.0.0:9090"},
		{in: "[::1]:443", want: "[::1]:443"},
		{in: "", wantErr: "names no address"},
		{in: "8080", wantErr: "[host]:port"},
		{in: ":0", wantErr: "1-65535"},
		{in: ":http", wantErr: "1-65535"},
		{in: "localhost:80", wantErr: "IP address"},
	} {
		ls, err := ParseListen(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseListen(%q) = %v, %v; want error %q", tt.in, ls, err, tt.wantErr)
			}
			continue
		}
		var got []string
		for _, l := range ls {
			got = append(got, l.String())
		}
		if err != nil || strings.Join(got, " ") != tt.want {
			t.Errorf("ParseListen(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	env := listenEnv([]Listener{{"0.0.0.0", 8080}, {"127.0.0.1", 9090}})
	if strings.Join(env, " ") != "LISTEN_FDS=2 LISTEN_FDS_START=4 LISTEN_FDNAMES=0.0.0.0:8080:127.0.0.1:9090" {
		t.Errorf("listenEnv = %q", env)
	}
}

// FuzzParseListen: WASM_LISTEN comes from a pod author. Whatever it says,
// ParseListen does not panic, and what it accepts are valid listeners that
// parse back to themselves.
func FuzzParseListen(f *testing.F) {
	for _, s := range []string{":8080", "127.0.0.1:80, :9090", "[::1]:443", "", "8080", ":0", "localhost:80", "[::ffff:1.2.3.4]:1,,", ":65536"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ls, err := ParseListen(s)
		if err != nil {
			return
		}
		if len(ls) == 0 {
			t.Fatalf("ParseListen(%q) accepted no listener", s)
		}
		var again []string
		for _, l := range ls {
			if l.Port < 1 || l.Port > 65535 || net.ParseIP(l.Host) == nil {
				t.Fatalf("ParseListen(%q) accepted %+v", s, l)
			}
			again = append(again, l.String())
		}
		back, err := ParseListen(strings.Join(again, ","))
		if err != nil || len(back) != len(ls) {
			t.Fatalf("ParseListen(%q) = %v; its addresses parse back to %v, %v", s, ls, back, err)
		}
		for i := range back {
			if back[i] != ls[i] {
				t.Fatalf("ParseListen(%q) = %v; its addresses parse back to %v", s, ls, back)
			}
		}
	})
}
