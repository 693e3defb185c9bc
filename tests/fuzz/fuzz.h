/* What every fuzz target defines: the libFuzzer entry point, which standalone.c also drives
 * when the targets are built as plain programs that replay a corpus. */
#ifndef PD_FUZZ_H
#define PD_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stops the run when a target finds its own result inconsistent (a reply that is not JSON, a
 * string that overruns its event): libFuzzer and the replay both report an abort. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__FILE__, __LINE__, #cond);                                                  \
    } while (0)

_Noreturn void fuzz_fail(const char *file, int line, const char *what);

#endif
