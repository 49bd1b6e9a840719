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
#include <signal.h>
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
 * VMs) and falls back to its SSE3 "Prescott" kernels, 5-7x slower for sgemm. Returns true
 * when it set OPENBLAS_CORETYPE. A user's own OPENBLAS_CORETYPE is kept. */
static int prefer_avx512_blas(void) {
#if defined(__x86_64__)
    if (getenv("OPENBLAS_CORETYPE") || getenv("EFLA_NO_BLAS_TUNING")) return 0;
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
          __builtin_cpu_supports("avx512cd")))
        return 0;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    return 1;
#else
    return 0;
#endif
}

/* OpenMP threads that spin after a parallel region take the cores from the next small op
 * and from everything else on a shared machine (docs/BENCHMARKS.md: a tiny CausalLM step
 * ~70x slower on a loaded 2-core VM); passive waiting costs large ops nothing measurable.
 * Returns true when it set OMP_WAIT_POLICY; a user's own is kept. */
static int prefer_passive_omp_wait(void) {
    if (getenv("OMP_WAIT_POLICY")) return 0;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    return 1;
}

/* OpenBLAS and libgomp read their variables when they are loaded, before main(), so the
 * only way to apply them is to exec ourselves once with them set (the second run finds
 * them set and goes on). */
static void reexec_with_tuned_env(char **argv) {
    int changed = prefer_avx512_blas();
    changed |= prefer_passive_omp_wait();
    if (changed) execv("/proc/self/exe", argv); /* returns only on failure: go on as we are */
}

/* Ctrl-C in the REPL (lua/efla/repl.lua switches the mode through _EFLA_LAUNCHER):
 *   "run"     while an entry runs: the first SIGINT sets a count hook that raises
 *             "interrupted!" at the next Lua instruction (as luajit's own lua.c does) and
 *             restores the default action, so a second Ctrl-C still ends a process stuck
 *             in C code;
 *   "prompt"  while reading a line: SIGINT only sets a flag; installed without SA_RESTART
 *             so readline's read() returns EINTR and the REPL can clear the line;
 *   "default" scripts and everything else: the default action (the process ends).
 * The REPL runs its entries with the JIT off: compiled loops never look at hooks. */
static lua_State *interrupt_L;
static volatile sig_atomic_t interrupt_seen;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void on_sigint_run(int sig) {
    signal(sig, SIG_DFL);
    interrupt_seen = 1;
    lua_sethook(interrupt_L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void on_sigint_prompt(int sig) {
    (void)sig;
    interrupt_seen = 1;
}

static void set_sigint(void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocked read() returns EINTR */
    sigaction(SIGINT, &sa, NULL);
}

/* _EFLA_LAUNCHER.interrupt_mode("run" | "prompt" | "default") */
static int l_interrupt_mode(lua_State *L) {
    const char *mode = luaL_checkstring(L, 1);
    lua_sethook(L, NULL, 0, 0); /* an interrupt that came too late to fire is dropped */
    if (strcmp(mode, "run") == 0) set_sigint(on_sigint_run);
    else if (strcmp(mode, "prompt") == 0) set_sigint(on_sigint_prompt);
    else if (strcmp(mode, "default") == 0) set_sigint(SIG_DFL);
    else return luaL_error(L, "interrupt_mode: unknown mode '%s' (use run, prompt or default)", mode);
    return 0;
}

/* _EFLA_LAUNCHER.take_interrupt(): true once per Ctrl-C since the last call */
static int l_take_interrupt(lua_State *L) {
    lua_pushboolean(L, interrupt_seen != 0);
    interrupt_seen = 0;
    return 1;
}

/* _EFLA_LAUNCHER.peek_interrupt(): true if a Ctrl-C is pending (does not clear it) */
static int l_peek_interrupt(lua_State *L) {
    lua_pushboolean(L, interrupt_seen != 0);
    return 1;
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = "(error object is not a string)";
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int main(int argc, char **argv) {
    reexec_with_tuned_env(argv);
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
    interrupt_L = L;
    lua_newtable(L);
    lua_pushcfunction(L, l_interrupt_mode);
    lua_setfield(L, -2, "interrupt_mode");
    lua_pushcfunction(L, l_take_interrupt);
    lua_setfield(L, -2, "take_interrupt");
    lua_pushcfunction(L, l_peek_interrupt);
    lua_setfield(L, -2, "peek_interrupt");
    lua_setglobal(L, "_EFLA_LAUNCHER");

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
