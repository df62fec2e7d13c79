/* Does this machine have the arch and CPU features the artifact's kernels were built for? */
#define _GNU_SOURCE
#include "mpq_runtime.h"

#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/utsname.h>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
/* Linux hwcap bits (asm/hwcap.h) */
static int has_feature(const char *f) {
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    if (strcmp(f, "neon") == 0) return (hw >> 1) & 1;        /* HWCAP_ASIMD */
    if (strcmp(f, "fp16") == 0) return (hw >> 10) & 1;       /* HWCAP_ASIMDHP */
    if (strcmp(f, "dotprod") == 0) return (hw >> 20) & 1;    /* HWCAP_ASIMDDP */
    if (strcmp(f, "sve") == 0) return (hw >> 22) & 1;        /* HWCAP_SVE */
    if (strcmp(f, "i8mm") == 0) return (hw2 >> 13) & 1;      /* HWCAP2_I8MM */
    return -1;
}
#else
/* x86-64: the board profiles name /proc/cpuinfo flags (avx512_vnni written avx512vnni) */
static int has_feature(const char *f) {
    static const char *renamed[][2] = {{"avx512vnni", "avx512_vnni"}};
    for (size_t i = 0; i < sizeof renamed / sizeof renamed[0]; i++)
        if (strcmp(f, renamed[i][0]) == 0) f = renamed[i][1];
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp) return -1;
    char line[8192];
    int found = 0;
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        char *save = NULL;
        for (char *tok = strtok_r(strchr(line, ':') ? strchr(line, ':') + 1 : line, " \t\n", &save); tok;
             tok = strtok_r(NULL, " \t\n", &save))
            if (strcmp(tok, f) == 0) found = 1;
        break;
    }
    fclose(fp);
    return found;
}
#endif

/* The CPU state a feature's kernels need from the OS: AMX tiles (mpq_backend.c asks) */
static int request_state(const char *f) {
    return strcmp(f, "amx_int8") == 0 ? mpq_request_amx_state() : 0;
}

int mpq_check_cpu(const mpq_model *m, char *err, size_t errlen) {
    const mpq_art_header *h = mpq_header(m);
    struct utsname u;
    if (uname(&u) == 0 && strcmp(u.machine, h->arch) != 0) {
        snprintf(err, errlen, "this artifact is for %s (board %s); this machine is %s", h->arch, h->board, u.machine);
        return -1;
    }
    char list[sizeof h->features + 1];
    memcpy(list, h->features, sizeof h->features);
    list[sizeof h->features] = '\0';
    char *save = NULL;
    for (char *f = strtok_r(list, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
        int has = has_feature(f);
        if (has == 0) {
            snprintf(err, errlen, "this artifact was built for board %s and needs the CPU feature '%s', which this "
                     "CPU lacks; compile the model for this board (mpqdm compile --board ...)", h->board, f);
            return -1;
        }
        if (has < 0) {
            snprintf(err, errlen, "cannot check the CPU feature '%s' the artifact needs on this machine", f);
            return -1;
        }
        if (request_state(f) != 0) {
            snprintf(err, errlen, "the kernel refused this process the CPU state of '%s' the artifact's "
                     "kernels use (arch_prctl: %s)", f, strerror(errno));
            return -1;
        }
    }
    return 0;
}
