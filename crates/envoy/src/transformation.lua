-- Trellis route transformations (Gloo's TransformationPolicy) in Envoy's Lua filter.
--
-- This code is fixed: it never contains anything from a policy or a request. Each route hands
-- it a JSON description of its templates through the LuaPerRoute filter context
-- ("transformation"); request and response content are only ever data (rendered into headers
-- and bodies, matched with string.match against patterns the translator wrote), never code.
--
-- Route config (built by crates/envoy/src/transformation.rs):
--   {"max": <body byte limit>, "requestHeaders": [names a response template reads],
--    "request": SIDE, "response": SIDE}
--   SIDE = {"set": [[name, T]], "append": [[name, T]], "remove": [name], "body": T,
--           "extract": [{"n": name, "h": header (absent: the body), "p": lua pattern, "g": group}],
--           "passthrough": bool, "json": bool, "lenient": bool}
--   T = [piece], piece = {"t": text} | {"h": header} | {"rh": request header} |
--       {"x": extraction} | {"j": [json path]} | {"b": true}

local NULL = setmetatable({}, { __tostring = function() return "null" end })
local ARRAY = {}
local MAX_DEPTH = 64
local METADATA = "trellis.transformation"

-- === JSON ===

local function utf8_char(cp)
  if cp < 0x80 then
    return string.char(cp)
  elseif cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
    0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local ESCAPES = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

-- Returns the value, or nil and a reason.
local function json_decode(text)
  local pos, len = 1, #text

  local function fail(message)
    error({ json = message .. " at byte " .. pos }, 0)
  end

  local function skip()
    pos = string.find(text, "[^ \t\r\n]", pos) or (len + 1)
  end

  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local s = string.find(text, '["\\]', pos)
      if not s then fail("unterminated string") end
      local chunk = string.sub(text, pos, s - 1)
      if string.find(chunk, "[%z\1-\31]") then fail("control character in a string") end
      out[#out + 1] = chunk
      if string.sub(text, s, s) == '"' then
        pos = s + 1
        return table.concat(out)
      end
      local e = string.sub(text, s + 1, s + 1)
      if ESCAPES[e] then
        out[#out + 1] = ESCAPES[e]
        pos = s + 2
      elseif e == 'u' then
        local hex = string.sub(text, s + 2, s + 5)
        if not string.find(hex, "^%x%x%x%x$") then fail("bad \\u escape") end
        local cp = tonumber(hex, 16)
        pos = s + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local low = string.match(text, "^\\u(%x%x%x%x)", pos)
          local lo = low and tonumber(low, 16)
          if not lo or lo < 0xDC00 or lo > 0xDFFF then fail("unpaired surrogate") end
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          pos = pos + 6
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          fail("unpaired surrogate")
        end
        out[#out + 1] = utf8_char(cp)
      else
        fail("bad escape")
      end
    end
  end

  local value
  value = function(depth)
    if depth > MAX_DEPTH then fail("nested too deeply") end
    skip()
    local c = string.sub(text, pos, pos)
    if c == '{' then
      local object = {}
      pos = pos + 1
      skip()
      if string.sub(text, pos, pos) == '}' then
        pos = pos + 1
        return object
      end
      while true do
        skip()
        if string.sub(text, pos, pos) ~= '"' then fail("expected a key") end
        local key = str()
        skip()
        if string.sub(text, pos, pos) ~= ':' then fail("expected ':'") end
        pos = pos + 1
        object[key] = value(depth + 1)
        skip()
        local d = string.sub(text, pos, pos)
        pos = pos + 1
        if d == '}' then return object end
        if d ~= ',' then fail("expected ',' or '}'") end
      end
    elseif c == '[' then
      local array = setmetatable({}, ARRAY)
      pos = pos + 1
      skip()
      if string.sub(text, pos, pos) == ']' then
        pos = pos + 1
        return array
      end
      while true do
        array[#array + 1] = value(depth + 1)
        skip()
        local d = string.sub(text, pos, pos)
        pos = pos + 1
        if d == ']' then return array end
        if d ~= ',' then fail("expected ',' or ']'") end
      end
    elseif c == '"' then
      return str()
    elseif string.sub(text, pos, pos + 3) == "true" then
      pos = pos + 4
      return true
    elseif string.sub(text, pos, pos + 4) == "false" then
      pos = pos + 5
      return false
    elseif string.sub(text, pos, pos + 3) == "null" then
      pos = pos + 4
      return NULL
    end
    local number = string.match(text, "^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    local n = number and tonumber(number)
    if not n then fail("unexpected character") end
    pos = pos + #number
    return n
  end

  local ok, result = pcall(function()
    local v = value(0)
    skip()
    if pos <= len then fail("trailing characters") end
    return v
  end)
  if ok then return result end
  if type(result) == "table" and result.json then return nil, result.json end
  return nil, tostring(result)
end

local function number_text(n)
  if n == math.floor(n) and math.abs(n) < 2 ^ 53 then return string.format("%d", n) end
  local short = string.format("%.15g", n)
  if tonumber(short) == n then return short end
  return string.format("%.17g", n)
end

local function encode_string(s)
  local escaped = string.gsub(s, '[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
    return named[c] or string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

-- As Inja prints a JSON value: object keys sorted.
local function json_encode(v)
  if v == NULL then return "null" end
  local kind = type(v)
  if kind == "string" then return encode_string(v) end
  if kind == "number" then return number_text(v) end
  if kind == "boolean" then return tostring(v) end
  local parts = {}
  if getmetatable(v) == ARRAY then
    for i = 1, #v do parts[i] = json_encode(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do parts[i] = encode_string(k) .. ":" .. json_encode(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function lookup(root, path)
  local v = root
  for i = 1, #path do
    local segment = path[i]
    if type(v) ~= "table" or v == NULL then return nil end
    if getmetatable(v) == ARRAY then
      if not string.find(segment, "^%d+$") then return nil end
      v = v[tonumber(segment) + 1]
    else
      v = v[segment]
    end
    if v == nil then return nil end
  end
  return v
end

-- === templates ===

local function render(template, env)
  local out = {}
  for i = 1, #template do
    local p = template[i]
    local v
    if p.t then
      v = p.t
    elseif p.h then
      v = env.headers:get(p.h) or ""
    elseif p.rh then
      v = env.request_headers[p.rh] or ""
    elseif p.x then
      v = env.extractions[p.x] or ""
    elseif p.b then
      v = env.body or ""
    elseif p.j then
      local name = table.concat(p.j, ".")
      if env.json == nil then return nil, "no JSON body to read " .. name .. " from" end
      local found = lookup(env.json, p.j)
      if found == nil then return nil, "the JSON body has no " .. name end
      if type(found) == "string" then v = found else v = json_encode(found) end
    else
      v = ""
    end
    out[#out + 1] = v
  end
  return table.concat(out)
end

local function render_headers(list, env)
  local rendered = {}
  for i = 1, #(list or {}) do
    local name, template = list[i][1], list[i][2]
    local v, err = render(template, env)
    if v == nil then return nil, err end
    -- A value from a body could hold a line break: never let it split a header.
    if string.find(v, "[%z\r\n]") then return nil, "the value rendered for " .. name .. " holds a line break" end
    rendered[#rendered + 1] = { name, v }
  end
  return rendered
end

-- Transforms one side. Returns nil when done, or a status and a message.
local function transform(handle, side, max, request_headers, too_large)
  local headers = handle:headers()
  local env = { headers = headers, request_headers = request_headers or {}, extractions = {} }
  local buffer
  if not side.passthrough then
    local declared = tonumber(headers:get("content-length") or "")
    if declared and declared > max then return too_large, "the body is larger than " .. max .. " bytes" end
    buffer = handle:body(true)
    local body = ""
    if buffer then body = buffer:getBytes(0, buffer:length()) end
    if #body > max then return too_large, "the body is larger than " .. max .. " bytes" end
    -- Reading the body waits for it, which ends the life of the headers object taken before.
    headers = handle:headers()
    env.headers = headers
    env.body = body
    if side.json and #body > 0 then
      local parsed, err = json_decode(body)
      if parsed == nil then
        if not side.lenient then return 400, "the body is not JSON: " .. err end
      else
        env.json = parsed
      end
    end
  end
  local extract = side.extract or {}
  for i = 1, #extract do
    local x = extract[i]
    local source
    if x.h then source = headers:get(x.h) else source = env.body end
    if source then
      local ok, captures = pcall(function() return { string.match(source, x.p) } end)
      if ok and captures[1] ~= nil then
        if x.g == 0 then env.extractions[x.n] = source else env.extractions[x.n] = captures[x.g] end
      end
    end
  end
  -- Every template sees the message as it came; then the changes apply together.
  local sets, err = render_headers(side.set, env)
  if not sets then return 400, err end
  local appends
  appends, err = render_headers(side.append, env)
  if not appends then return 400, err end
  local new_body
  if side.body then
    new_body, err = render(side.body, env)
    if new_body == nil then return 400, err end
  end
  -- Gloo's order (envoy-gloo's InjaTransformer): set (an empty rendering removes), remove,
  -- then append (an empty rendering adds nothing).
  for i = 1, #sets do
    if sets[i][2] == "" then headers:remove(sets[i][1]) else headers:replace(sets[i][1], sets[i][2]) end
  end
  local remove = side.remove or {}
  for i = 1, #remove do headers:remove(remove[i]) end
  for i = 1, #appends do
    if appends[i][2] ~= "" then headers:add(appends[i][1], appends[i][2]) end
  end
  if new_body and buffer then
    buffer:setBytes(new_body)
    headers:replace("content-length", tostring(#new_body))
  end
  return nil
end

-- === the filter ===

local cache, cached = {}, 0

local function route_config(handle)
  local context = handle:filterContext()
  local text = context and context:get("transformation")
  if type(text) ~= "string" then return nil end
  local config = cache[text]
  if config == nil then
    local err
    config, err = json_decode(text)
    if config == nil then
      handle:logErr("trellis transformation: unreadable route config: " .. err)
      return nil
    end
    if cached >= 256 then cache, cached = {}, 0 end
    cache[text] = config
    cached = cached + 1
  end
  return config
end

function envoy_on_request(handle)
  local config = route_config(handle)
  if not config then return end
  if config.request then
    local status, message = transform(handle, config.request, config.max, nil, 413)
    if status then
      handle:streamInfo():dynamicMetadata():set(METADATA, "failed", true)
      handle:respond({ [":status"] = tostring(status), ["content-type"] = "text/plain" },
        "transformation failed: " .. message .. "\n")
      return
    end
  end
  local names = config.requestHeaders or {}
  if #names > 0 then
    local seen, headers = {}, handle:headers()
    for i = 1, #names do seen[names[i]] = headers:get(names[i]) end
    handle:streamInfo():dynamicMetadata():set(METADATA, "request_headers", seen)
  end
end

function envoy_on_response(handle)
  local config = route_config(handle)
  if not config or not config.response then return end
  local stored = handle:streamInfo():dynamicMetadata():get(METADATA) or {}
  if stored.failed then return end
  local declared = tonumber(handle:headers():get("content-length") or "")
  if not config.response.passthrough and declared and declared > config.max then
    -- Not buffered: a body this large streams through untransformed.
    handle:logWarn("trellis transformation: response body over " .. config.max .. " bytes left untransformed")
    return
  end
  local status, message = transform(handle, config.response, config.max, stored.request_headers, 500)
  if status then
    local text = "transformation failed: " .. message .. "\n"
    local buffer
    if not config.response.passthrough then buffer = handle:body(true) end
    local headers = handle:headers()
    headers:replace(":status", tostring(status))
    headers:replace("content-type", "text/plain")
    if buffer then
      buffer:setBytes(text)
      headers:replace("content-length", tostring(#text))
    end
  end
end
