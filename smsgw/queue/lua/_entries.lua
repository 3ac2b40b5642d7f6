-- Shared by claim.lua and fetch.lua (put before each by load_script's helpers).
-- Appends the stream entries `entries` (as XREADGROUP and XAUTOCLAIM return them) to `out`
-- as (stream index k, entry id, payload) triples and returns how many it appended. Entries
-- deleted meanwhile come back without fields (XAUTOCLAIM, Redis < 7): skipped.
local function append_entries(out, k, entries)
    local appended = 0
    for _, entry in ipairs(entries) do
        if entry[2] then
            out[#out + 1] = k
            out[#out + 1] = entry[1]
            out[#out + 1] = entry[2][2]
            appended = appended + 1
        end
    end
    return appended
end
