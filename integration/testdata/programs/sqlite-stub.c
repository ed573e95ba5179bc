/* What the SQLite shell calls that WASI preview 1 lacks: the shell builds
 * with these and says so when they fail. */
#include <sys/types.h>

int chmod(const char *path, mode_t mode) {
	(void)path;
	(void)mode;
	return 0;
}

int system(const char *command) {
	(void)command;
	return -1;
}
