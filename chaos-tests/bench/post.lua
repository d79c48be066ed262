-- wrk script: each request posts a 200-byte message with a fresh client_msg_id.
-- TOKEN (bearer) comes from the environment; see wrk-posts.sh.
local counter = 0
setup = function(thread) thread:set("tid", math.random(1, 1e9)) end
request = function()
  counter = counter + 1
  local body = '{"body":"' .. string.rep("x", 200) .. '","client_msg_id":"w' .. tid .. '-' .. counter .. '"}'
  return wrk.format("POST", "/api/v1/channels/w/messages",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("TOKEN")}, body)
end
