#!/usr/bin/python3
"""Drives the efla REPL through a pseudo-terminal, as a user at a keyboard would.

    python3 tests/lua/repl_pty.py EFLA_EXE HISTORY_FILE

Checks, in order: line editing is on (no "no line editing" notice); a line reaches the
history file as soon as it is entered; tab completion of a module field (efla.linsp<TAB>)
and of a method (t:nu<TAB>); a multi-line entry with the ">> " prompt; Ctrl-C during
`while true do end` returns to the prompt with a variable set before intact; Ctrl-C at the
prompt clears the half-typed line; Ctrl-D quits with status 0. Prints "ok <step>" per
check and exits 1 at the first failure (with what the terminal showed)."""
import os, pty, select, sys, time

exe, hist = sys.argv[1], sys.argv[2]
env = dict(os.environ, EFLA_HISTORY=hist, TERM='dumb')
plain = len(sys.argv) > 3 and sys.argv[3] == 'plain'
if plain:   # Lua modules only from efla's own folders: no lua-readline
    env['LUA_PATH'] = '/nonexistent/?.lua'
    env['LUA_CPATH'] = '/nonexistent/?.so'
pid, fd = pty.fork()
if pid == 0:
    os.execve(exe, [exe], env)

seen = b''
pos = 0   # what the checks have matched so far ends here


def read_until(needle, timeout=10.0):
    """Reads the terminal until needle appears after the previous match; moves past it."""
    global seen, pos
    want = needle.encode()
    end = time.time() + timeout
    while True:
        i = seen.find(want, pos)
        if i >= 0:
            pos = i + len(want)
            return True
        if time.time() >= end:
            return False
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return seen.find(want, pos) >= 0
            if not chunk:
                return seen.find(want, pos) >= 0
            seen += chunk


def fail(step):
    print('FAIL', step, '\n--- terminal ---\n' + seen.decode(errors='replace'))
    try:
        os.kill(pid, 9)
    except OSError:
        pass
    sys.exit(1)


def check(step, cond):
    if not cond:
        fail(step)
    print('ok', step)


def send(text):
    os.write(fd, text.encode())


check('prompt', read_until('efla> '))
if plain:
    check('a one-line notice without lua-readline', b'no line editing: the lua-readline module is not installed' in seen)
    send('print(20 + 1)\n')
    check('lines still run', read_until('\n21\r\n'))
    send('for i = 1, 2 do\n')
    check('multi-line input without readline', read_until('>> '))
    send('end\n')
    read_until('efla> ')
    send('\x04')
    for _ in range(50):
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            check('Ctrl-D quits with status 0', os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0)
            sys.exit(0)
        time.sleep(0.1)
    fail('Ctrl-D quits with status 0')
send('x = 42\n')
check('prompt after an assignment', read_until('efla> '))
with open(hist) as f:
    check('history saved per line', 'x = 42' in f.read())
check('line editing is on', b'no line editing' not in seen)

send('r = efla.linsp\t(0, 1, 5)\n')
check('prompt after a completed name', read_until('efla> '))
send('print(r[2])\n')
check('Tab completed efla.linsp to efla.linspace', read_until('0.25'))
send('print(r:nu\t())\n')
check('Tab completed the method r:nu to r:numel', read_until('\n5\r\n'))
send('for i = 1, 2 do\n')
check('an unfinished entry asks for more with ">> "', read_until('>> '))
send('  x = x + i\nend\n')
check('prompt after the multi-line entry', read_until('efla> '))
send('print(x)\n')
check('the multi-line entry ran', read_until('\n45\r\n'))
send('x = 42\n')
check('prompt after resetting x', read_until('efla> '))

send('while true do end\n')
time.sleep(0.5)
send('\x03')
check('Ctrl-C stops a running loop', read_until('interrupted!'))
check('prompt after the interrupt', read_until('efla> '))
send('print(x + 1)\n')
check('state kept after the interrupt', read_until('43'))

send('for i = 1, 1e12 do local t = efla.ones(2) end\n')   # a loop that calls into C
time.sleep(0.5)
send('\x03')
check('Ctrl-C stops a loop over efla calls', read_until('interrupted!'))
check('prompt after the second interrupt', read_until('efla> '))

send('this is not lua')
time.sleep(0.2)
send('\x03')
time.sleep(0.2)
send('print(x * 2)\n')
check('Ctrl-C at the prompt clears the line', read_until('84'))
check('no syntax error from the cleared line', b'not lua' not in seen.split(b'84')[-1] and b'syntax error' not in seen)

# Ctrl-D only quits at an empty prompt: wait for it (a slow build, e.g. under AddressSanitizer,
# may still be printing), then send it again if the REPL has not gone after a while.
read_until('efla> ')
status = None
for _ in range(10):
    try:
        send('\x04')
    except OSError:   # the terminal is gone: the REPL has quit
        pass
    for _ in range(20):
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        time.sleep(0.1)
    if status is not None:
        break
quit_ok = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
if not quit_ok:
    read_until('\0never\0', 2.0)   # what came after Ctrl-D (a sanitizer's report) goes into the failure
check('Ctrl-D quits with status 0', quit_ok)
