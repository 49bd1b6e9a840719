/* read_everything.h: what a loader does with a checkpoint, through the C API: open it, list
 * its datasets, read each one's shape and data, and the root attributes every checkpoint
 * has (short, numeric and long). Shared by the fuzz target and the regression replay.
 * Returns 0 when everything read, 1 on a clean error (a non-empty message), 2 when an error
 * came without a message. */
#ifndef EFLA_READ_EVERYTHING_H
#define EFLA_READ_EVERYTHING_H
#include "efla.h"

static int read_everything(const char *path) {
    efla_h5 *f = efla_h5_open(path);
    if (!f) return efla_last_error()[0] ? 1 : 2;
    int rc = 0, n = efla_h5_count(f);
    if (n < 0) rc = 1;
    for (int i = 0; i < n; i++) {
        const char *name = efla_h5_name(f, i);
        if (!name) { rc = 1; continue; }
        int nd;
        int64_t shape[8];
        efla_dtype d;
        if (efla_h5_info(f, name, &nd, shape, &d) < 0) rc = 1;
        efla_tensor *t = efla_h5_read_tensor(f, name);
        if (!t) rc = 1;
        efla_tensor_release(t);
        if (!efla_h5_read_attr_string(f, name, "efla_dtype") && efla_last_error()[0]) rc = 1;
    }
    static const char *keys[] = {"efla_version", "config_json", "metrics_json", "meta_json", "sections_json", "no_such_key"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!efla_h5_read_attr_string(f, "/", keys[i]) && efla_last_error()[0]) rc = 1;
    double v;
    if (efla_h5_read_attr_double(f, "/", "format_version", &v) < 0) rc = 1;
    if (efla_h5_read_attr_double(f, "/model", "step", &v) < 0) rc = 1;
    if (rc && !efla_last_error()[0]) rc = 2;
    efla_h5_close(f);
    return rc;
}
#endif
