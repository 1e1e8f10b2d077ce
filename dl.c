timeout: failed to run command ‘send’: No such file or directory
13:04:53
