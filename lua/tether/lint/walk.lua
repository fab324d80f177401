-- tether.lint.walk: the files a list of files and directories stands for.
--
-- Directories are searched recursively for *.lua files, in sorted order,
-- skipping hidden folders (such as .git or a .rocks tree). Each real file
-- and directory is visited once, whatever the links to it: a symbolic
-- link to a parent folder is a loop, not a deeper tree, and a file met
-- again through another link or argument is not linted twice. The paths
-- reported are those of the first visit, as the caller spelled them.
--
-- LuaFileSystem is used when it is installed; without it, find(1) lists
-- the files.

local walk = {}

-- LuaFileSystem, or nil when it is not installed.
local function get_lfs()
  local ok, lfs = pcall(require, "lfs")
  return ok and lfs or nil
end

-- Quotes `s` for the shell.
local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The identity of the file or directory at `path` (device and inode,
-- through links), or nil if it cannot be read.
local function identity(lfs, path)
  if lfs then
    local attr = lfs.attributes(path)
    return attr and (attr.dev .. ":" .. attr.ino) or nil
  end
  local p = io.popen("stat -L -c '%d:%i' " .. shell_quote(path)
    .. " 2>/dev/null")
  local id = p:read("l")
  p:close()
  return id
end

-- Tells whether `path` is a directory.
local function is_dir(lfs, path)
  if lfs then
    return lfs.attributes(path, "mode") == "directory"
  end
  local f = io.open(path, "rb")
  if not f then
    return false
  end
  -- Reading a directory fails with EISDIR, while a file reads fine.
  local _, _, code = f:read(1)
  f:close()
  return code == 21
end

-- Adds `path` to `out` unless its file was met before.
local function add_file(lfs, path, out, seen)
  local id = identity(lfs, path)
  if id == nil or not seen[id] then
    if id then
      seen[id] = true
    end
    out[#out + 1] = path
  end
end

-- Lists the *.lua files under directory `dir` with find(1), which follows
-- links (-L) and steps over loops by itself.
local function find_under(dir, out, seen)
  local p = io.popen("find -L " .. shell_quote(dir)
    .. " -type f -name '*.lua' -printf '%D:%i %p\\n' 2>/dev/null")
  local list, ids = {}, {}
  for line in p:lines() do
    local id, path = line:match("^(%S+) (.*)$")
    if path and not path:sub(#dir + 1):match("/%.") then
      list[#list + 1] = path
      ids[path] = id
    end
  end
  p:close()
  table.sort(list)
  for _, path in ipairs(list) do
    if not seen[ids[path]] then
      seen[ids[path]] = true
      out[#out + 1] = path
    end
  end
end

-- Lists the *.lua files under directory `dir` into `out`, recursively and
-- sorted; `seen` holds the identities of what was visited already.
local function lua_files_under(lfs, dir, out, seen)
  if not lfs then
    return find_under(dir, out, seen)
  end
  local names = {}
  local ok, iter, state = pcall(lfs.dir, dir)
  if not ok then
    return
  end
  for name in iter, state do
    if name:sub(1, 1) ~= "." then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  local sep = dir:sub(-1) == "/" and "" or "/"
  for _, name in ipairs(names) do
    local path = dir .. sep .. name
    local mode = lfs.attributes(path, "mode")
    if mode == "directory" then
      local id = identity(lfs, path)
      if id and not seen[id] then
        seen[id] = true
        lua_files_under(lfs, path, out, seen)
      end
    elseif mode == "file" and name:match("%.lua$") then
      add_file(lfs, path, out, seen)
    end
  end
end

-- walk.expand_paths(paths) -> files
--
-- Replaces each directory in `paths` by the *.lua files under it; other
-- paths (and "-", the standard input) stay as they are. A file or
-- directory met a second time is left out.
function walk.expand_paths(paths)
  local lfs = get_lfs()
  local files, seen = {}, {}
  for _, path in ipairs(paths) do
    if path ~= "-" and is_dir(lfs, path) then
      local id = identity(lfs, path)
      if id == nil or not seen[id] then
        if id then
          seen[id] = true
        end
        lua_files_under(lfs, path, files, seen)
      end
    elseif path == "-" then
      files[#files + 1] = path
    else
      add_file(lfs, path, files, seen)
    end
  end
  return files
end

return walk
