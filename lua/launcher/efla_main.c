/* efla_main.c: the `efla` command. It embeds LuaJIT, points package.path at efla's Lua
 * files and hands over to lua/efla/cli.lua, which does the rest (scripts, -e, the REPL).
 *
 * Where the Lua files are: first the relocatable layouts next to the executable
 * (bin/../share/efla/lua for an install or a GPU bundle), else the source and build trees
 * this binary was built from. libefla is linked in, so its symbols are in ffi.C. */
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "efla.h"

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void exe_dir(char *out, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0) { snprintf(out, cap, "."); return; }
    out[n] = 0;
    char *slash = strrchr(out, '/');
    if (slash) *slash = 0;
}

/* Debian's OpenBLAS 0.3.21 does not know recent AVX-512 Xeons (seen: Sapphire Rapids
 * VMs) and falls back to its SSE3 "Prescott" kernels, 5-7x slower for sgemm. OpenBLAS
 * picks its kernels when it is loaded, before main(), so the only fix from here is to set
 * OPENBLAS_CORETYPE and exec ourselves once. A user's own OPENBLAS_CORETYPE is kept. */
static void prefer_avx512_blas(char **argv) {
#if defined(__x86_64__)
    if (getenv("OPENBLAS_CORETYPE") || getenv("EFLA_NO_BLAS_TUNING")) return;
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
          __builtin_cpu_supports("avx512cd")))
        return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    execv("/proc/self/exe", argv);   /* returns only on failure: then go on as we are */
#else
    (void)argv;
#endif
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = "(error object is not a string)";
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int main(int argc, char **argv) {
    prefer_avx512_blas(argv);
    char dir[PATH_MAX], lua_dir[PATH_MAX + 32], path[4 * PATH_MAX + 256];
    exe_dir(dir, sizeof dir);
    snprintf(lua_dir, sizeof lua_dir, "%s/../share/efla/lua", dir);
    if (is_dir(lua_dir))
        snprintf(path, sizeof path, "%s/?.lua;%s/?/init.lua;", lua_dir, lua_dir);
    else
        snprintf(path, sizeof path, "%s/?.lua;%s/?.lua;%s/?/init.lua;", EFLA_BUILD_LUA_DIR,
                 EFLA_SOURCE_LUA_DIR, EFLA_SOURCE_LUA_DIR);

    lua_State *L = luaL_newstate();
    if (!L) { fprintf(stderr, "efla: cannot create the Lua state (out of memory)\n"); return 1; }
    luaL_openlibs(L);
    /* package.path = efla's dirs .. the default path (so user modules still load) */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushstring(L, path);
    lua_insert(L, -2);
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    lua_pushstring(L, efla_version());
    lua_setglobal(L, "_EFLA_VERSION");

    /* cli.main(argv[1..]) */
    lua_pushcfunction(L, traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, "efla.cli");
    int rc = lua_pcall(L, 1, 1, -3);
    if (rc == 0) {
        lua_getfield(L, -1, "main");
        lua_newtable(L);
        for (int i = 1; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i);
        }
        lua_pushstring(L, argv[0]);
        lua_rawseti(L, -2, 0);
        rc = lua_pcall(L, 1, 1, -4);
    }
    int status = 0;
    if (rc != 0) {
        fprintf(stderr, "efla: %s\n", lua_tostring(L, -1));
        status = 1;
    } else if (lua_isnumber(L, -1)) {
        status = (int)lua_tointeger(L, -1);
    }
    lua_close(L);
    return status;
}
