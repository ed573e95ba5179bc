package wasmmod

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxShown bounds how much of a name a message shows, in bytes: names come
// from the module and may be megabytes long.
const maxShown = 64

// shorten returns name cut to at most maxShown bytes, at a rune boundary,
// and whether it was cut.
func shorten(name []byte) (string, bool) {
	if len(name) <= maxShown {
		return string(name), false
	}
	cut := maxShown
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return string(name[:cut]), true
}

// quoteName returns a name of the module quoted for a message, shortened if
// it is long.
func quoteName(name []byte) string {
	s, cut := shorten(name)
	if cut {
		return strconv.Quote(s) + "…"
	}
	return strconv.Quote(s)
}

// listName returns a name of the module for a list in a message: as it is
// if it is short and plain, quoted otherwise, so that a name cannot pass for
// several or smuggle control characters into a log.
func listName(name []byte) string {
	s, cut := shorten(name)
	if cut || s == "" || strings.IndexFunc(s, notPlain) >= 0 {
		return quoteName(name)
	}
	return s
}

// notPlain reports whether r needs quoting in a list of names.
func notPlain(r rune) bool {
	return !unicode.IsGraphic(r) || unicode.IsSpace(r) || strings.ContainsRune(`,"()\`, r)
}
