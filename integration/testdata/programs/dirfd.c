/* dirfd: the file idioms C programs use, relative to the working
 * directory, which must hold a directory "d" and a file "a.txt":
 * openat and fstatat relative to a directory descriptor, going above it;
 * writing to /dev/stdout and /dev/stderr by name; exit() with a status.
 * Built with debug info (-g), so that exit's cost with DWARF shows. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void show(const char *what, int fd) {
	char buf[64] = {0};
	if (fd < 0) {
		printf("%s: error\n", what);
		return;
	}
	ssize_t n = read(fd, buf, sizeof buf - 1);
	printf("%s: %zd bytes: %s", what, n, buf);
	close(fd);
}

int main(int argc, char **argv) {
	int d = open("d", O_RDONLY | O_DIRECTORY);
	if (d < 0) {
		perror("open d");
		return 1;
	}
	show("openat(d, ../a.txt)", openat(d, "../a.txt", O_RDONLY));
	show("openat(d, ../d/../a.txt)", openat(d, "../d/../a.txt", O_RDONLY));
	struct stat st;
	printf("fstatat(d, ..): %s\n", fstatat(d, "..", &st, 0) == 0 && S_ISDIR(st.st_mode) ? "a directory" : "error");
	mkdirat(d, "e", 0755); /* may be there from an earlier run */
	int e = openat(d, "e", O_RDONLY | O_DIRECTORY);
	printf("fstatat(e, ../../a.txt): %s\n", fstatat(e, "../../a.txt", &st, 0) == 0 ? "found" : "error");

	fflush(stdout);
	FILE *out = fopen("/dev/stdout", "w");
	if (out == NULL) {
		perror("fopen /dev/stdout");
		return 1;
	}
	fprintf(out, "to /dev/stdout by name, %d arguments\n", argc - 1);
	fclose(out);
	FILE *err = fopen("/dev/stderr", "w");
	if (err != NULL) {
		fprintf(err, "to /dev/stderr by name\n");
		fclose(err);
	}
	fflush(stdout);
	exit(argc > 1 ? atoi(argv[1]) : 0);
}
