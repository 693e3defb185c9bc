/* A main() for the fuzz targets built without libFuzzer: every file named on the command line,
 * or found in a directory named there, goes once through LLVMFuzzerTestOneInput. The meson
 * tests replay the seed corpora this way, so the sanitizer build checks every seed and every
 * kept reproducer on each run of scripts/test without fuzzing.
 *
 *   fuzz_<name> [--skip FILE]... PATH...
 *
 * --skip leaves out a file (by its name) that reproduces a known, not yet fixed bug. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#define MAX_SKIPS 64

static const char *skips[MAX_SKIPS];
static size_t n_skips;

static bool skipped(const char *name)
{
    for (size_t i = 0; i < n_skips; i++)
        if (strcmp(skips[i], name) == 0)
            return true;
    return false;
}

/* Runs one file; the input is a heap block of exactly its size, as libFuzzer gives it, so a
 * read one byte past the end is an ASan report here too. Returns 0 or -errno. */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    uint8_t *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *nd = realloc(data, ncap);
            if (!nd) {
                free(data);
                fclose(f);
                return -ENOMEM;
            }
            data = nd;
            cap = ncap;
        }
        size_t got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int err = ferror(f) ? -EIO : 0;
    fclose(f);
    if (err) {
        free(data);
        return err;
    }
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(data);
        return -ENOMEM;
    }
    if (len)
        memcpy(exact, data, len);
    free(data);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file directly in dir, in name order so a failure is reproducible. Returns the
 * number run, or -errno. */
static long run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    char **names = NULL;
    size_t n = 0, cap = 0;
    long ret = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || skipped(de->d_name))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **nn = realloc(names, ncap * sizeof *nn);
            if (!nn) {
                ret = -ENOMEM;
                goto out_free_names;
            }
            names = nn;
            cap = ncap;
        }
        if (!(names[n] = strdup(de->d_name))) {
            ret = -ENOMEM;
            goto out_free_names;
        }
        n++;
    }
    qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        fprintf(stderr, "Running: %s\n", path); /* names the input if it aborts */
        int err = run_file(path);
        if (err < 0) {
            fprintf(stderr, "cannot read \"%s\": %s\n", path, strerror(-err));
            ret = err;
            goto out_free_names;
        }
        ret++;
    }
out_free_names:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return ret;
}

int main(int argc, char **argv)
{
    long total = 0;
    int n_paths = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--skip") == 0 && i + 1 < argc) {
            if (n_skips == MAX_SKIPS) {
                fprintf(stderr, "too many --skip\n");
                return 2;
            }
            skips[n_skips++] = argv[++i];
            continue;
        }
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            fprintf(stderr, "cannot open \"%s\": %s\n", argv[i], strerror(errno));
            return 1;
        }
        long got;
        if (S_ISDIR(st.st_mode)) {
            got = run_dir(argv[i]);
        } else {
            int err = run_file(argv[i]);
            got = err < 0 ? err : 1;
        }
        if (got < 0) {
            fprintf(stderr, "cannot replay \"%s\": %s\n", argv[i], strerror((int)-got));
            return 1;
        }
        total += got;
        n_paths++;
    }
    if (n_paths == 0) {
        fprintf(stderr, "usage: %s [--skip FILE]... PATH...\n", argv[0]);
        return 2;
    }
    if (total == 0) {
        fprintf(stderr, "no inputs found: an empty corpus proves nothing\n");
        return 1;
    }
    printf("%ld inputs replayed, %zu skipped by name\n", total, n_skips);
    return 0;
}
