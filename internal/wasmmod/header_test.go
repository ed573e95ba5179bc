package wasmmod

import "testing"

func TestIsComponent(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		want    bool
		version uint16
	}{
		{"core module", "\x00asm\x01\x00\x00\x00", false, 0},
		{"component", "\x00asm\x0d\x00\x01\x00", true, 0x0d},
		{"later component version", "\x00asm\x0e\x00\x01\x00", true, 0x0e},
		{"unknown layer", "\x00asm\x01\x00\x02\x00", false, 0},
		{"short", "\x00asm\x0d\x00\x01", false, 0},
		{"other magic", "\x7fELF\x0d\x00\x01\x00", false, 0},
		{"empty", "", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, ok := IsComponent([]byte(tt.header))
			if ok != tt.want || v != tt.version {
				t.Errorf("IsComponent(%q) = %d, %v; want %d, %v", tt.header, v, ok, tt.version, tt.want)
			}
		})
	}
}
