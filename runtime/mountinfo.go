package runtime

import (
	"fmt"
	"strconv"
	"strings"
)

// mountLine is one line of a mountinfo table (proc(5)).
type mountLine struct {
	// dev is the MAJ:MIN field as it stands.
	dev string
	// root and mountpoint, with mountinfo's octal escapes undone.
	root, mountpoint string
	// fstype and superOptions are the fields after the "-" separator.
	fstype, superOptions string
}

// parseMountLine splits a mountinfo line:
//
//	ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
func parseMountLine(line string) (mountLine, error) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" {
			sep = i
			break
		}
	}
	if sep < 5 || sep+1 >= len(fields) {
		return mountLine{}, fmt.Errorf("malformed mountinfo line %q", line)
	}
	m := mountLine{
		dev:        fields[2],
		root:       unescapeMount(fields[3]),
		mountpoint: unescapeMount(fields[4]),
		fstype:     fields[sep+1],
	}
	if sep+3 < len(fields) {
		m.superOptions = fields[sep+3]
	}
	return m, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
