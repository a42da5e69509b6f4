-- Hop-by-hop headers (RFC 9110 7.6.1) and the fields a Connection header lists are dropped both
-- ways, as the Python data plane does. The fixed names go by a `del-header` regex in the rendered
-- configuration; HAProxy calls this only when a Connection header is present (it deletes them too).
local HOP = { "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade" }
local KEEP = { ["transfer-encoding"] = true, ["content-length"] = true, ["host"] = true }

local function strip(headers, delete)
  local listed = headers["connection"]
  if listed then
    for _, value in pairs(listed) do
      for token in string.gmatch(value, "[^,%s]+") do
        local name = string.lower(token)
        if not KEEP[name] then
          delete(name)
        end
      end
    end
  end
  for _, name in ipairs(HOP) do
    delete(name)
  end
end

core.register_action("strip_hop_req", { "http-req" }, function(txn)
  strip(txn.http:req_get_headers(), function(name) txn.http:req_del_header(name) end)
end)
core.register_action("strip_hop_res", { "http-res" }, function(txn)
  strip(txn.http:res_get_headers(), function(name) txn.http:res_del_header(name) end)
end)
