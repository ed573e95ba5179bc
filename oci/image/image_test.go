package image

import "testing"

func TestRefNameDigest(t *testing.T) {
	if got := refName("example.local/x@sha256:0123abcd"); got != "latest" {
		t.Errorf("refName of a digest reference = %q, want latest", got)
	}
	if got := refName("example.local/x:v2@sha256:0123abcd"); got != "v2" {
		t.Errorf("refName of a tagged digest reference = %q, want v2", got)
	}
}
