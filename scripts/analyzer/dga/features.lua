-- DGA features: the 23 numbers the dga-rf forest tests, computed from a domain name.
-- Must stay bit-identical to extract() in scripts/ml/train_dga.py (see scripts/ml/README.md):
-- bytes, ASCII lowercase, one trailing dot removed, labels split on every '.', character
-- features on the second-to-last label (2ld), entropy summed in ascending byte order.
-- Usage: local features = require 'analyzer/dga/features'; local f = features.extract(name)
local M = {}

M.NAMES = {
   "num_parts", "len_tld", "len_2ld", "len_3ld", "has_3ld", "more_than_3ld", "two_letter_tld",
   "is_edu", "is_gov", "is_com", "is_net", "is_org", "is_info", "is_biz", "distinct_char",
   "digit_count", "has_digit", "num_dashes", "has_dash", "length_extra", "percent_distinct",
   "percent_digits", "entropy",
}

local byte, sub, lower, log = string.byte, string.sub, string.lower, math.log
local LN2 = log(2)
local DOT, DASH, ZERO, NINE = 46, 45, 48, 57

-- Per-byte counts of the 2ld, all zero between calls.
local counts = {}
for b = 0, 255 do counts[b] = 0 end

local function flag(c)
   return c and 1 or 0
end

-- Returns {feature name = number} for a domain name, or nil if it is not a non-empty string.
function M.extract(domain)
   if type(domain) ~= "string" or domain == "" then return nil end
   local s = lower(domain)
   local n = #s
   if byte(s, n) == DOT then n = n - 1 end
   if n == 0 then return nil end

   -- The last three dots (0 when absent) and the number of dots.
   local d1, d2, d3, dots = 0, 0, 0, 0
   for i = n, 1, -1 do
      if byte(s, i) == DOT then
         dots = dots + 1
         if dots == 1 then d1 = i elseif dots == 2 then d2 = i elseif dots == 3 then d3 = i end
      end
   end
   local parts = dots + 1
   local tld = sub(s, d1 + 1, n)
   local len_tld = n - d1
   local len_2ld = d1 > 0 and d1 - d2 - 1 or 0
   local len_3ld = d2 > 0 and d2 - d3 - 1 or 0
   -- Labels left of the 3ld fill s[1 .. d3-1], which holds dots-3 dots.
   local extra = d3 > 0 and (d3 - 1) - (dots - 3) or 0

   -- Character features of the 2ld, s[d2+1 .. d1-1].
   local distinct, digits, dashes, lo, hi = 0, 0, 0, 256, -1
   if d1 > 0 then
      for i = d2 + 1, d1 - 1 do
         local b = byte(s, i)
         local c = counts[b]
         if c == 0 then distinct = distinct + 1 end
         counts[b] = c + 1
         if b < lo then lo = b end
         if b > hi then hi = b end
         if b >= ZERO and b <= NINE then
            digits = digits + 1
         elseif b == DASH then
            dashes = dashes + 1
         end
      end
   end
   local entropy = 0.0
   for b = lo, hi do
      local c = counts[b]
      if c > 0 then
         local p = c / len_2ld
         entropy = entropy - p * (log(p) / LN2)
         counts[b] = 0
      end
   end

   return {
      num_parts = parts,
      len_tld = len_tld,
      len_2ld = len_2ld,
      len_3ld = len_3ld,
      has_3ld = flag(parts >= 3),
      more_than_3ld = flag(parts > 3),
      two_letter_tld = flag(len_tld == 2),
      is_edu = flag(tld == "edu"),
      is_gov = flag(tld == "gov"),
      is_com = flag(tld == "com"),
      is_net = flag(tld == "net"),
      is_org = flag(tld == "org"),
      is_info = flag(tld == "info"),
      is_biz = flag(tld == "biz"),
      distinct_char = distinct,
      digit_count = digits,
      has_digit = flag(digits > 0),
      num_dashes = dashes,
      has_dash = flag(dashes > 0),
      length_extra = extra,
      percent_distinct = len_2ld > 0 and distinct / len_2ld or 0,
      percent_digits = len_2ld > 0 and digits / len_2ld or 0,
      entropy = entropy,
   }
end

return M
