-- launcher_env.lua: prints what efla-run set; with "fail R CODE", rank R exits with CODE while
-- the others sleep (the launcher must stop them).
print(string.format('env rank=%s world=%s local=%s master=%s:%s args=%s', os.getenv('RANK'), os.getenv('WORLD_SIZE'),
  os.getenv('LOCAL_RANK'), os.getenv('MASTER_ADDR'), os.getenv('MASTER_PORT'), table.concat(arg, ',')))
io.stdout:flush()
if arg[1] == 'fail' then
  if os.getenv('RANK') == arg[2] then os.exit(tonumber(arg[3])) end
  require('posix.unistd').sleep(60)
  print('still running after 60 s')
end
