/// The Lua scripts of the step protocol. Each checks fencing token, seq and status **before its first
/// write** (a Lua script that fails half-way does not roll back), and takes time from Redis (`TIME`), never
/// from a worker's clock.
///
/// Decision (docs/design.md): scripts touch one task's keys (one hash slot) plus the bucketed global keys
/// (status index, outbox index, timers) that must change atomically with them. On standalone Redis (what
/// Baton is built and tested for) that is atomic; Redis Cluster would reject the cross-slot access.
enum Scripts {
    static let common = """
        local function now_ms()
          local t = redis.call('TIME')
          return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        end
        local TERMINAL = {succeeded=true, failed=true, cancelled=true, budget_exceeded=true, dead_lettered=true}
        -- Running tasks stay in the 'queued' index (the active index): a claim writes no index.
        local function index_of(status)
          if status == 'running' then return 'queued' end
          return status
        end
        local function move_index(prefix, id, old, new, now)
          local from, to = index_of(old or ''), index_of(new)
          if from ~= '' and from ~= to then redis.call('ZREM', prefix .. from, id) end
          redis.call('ZADD', prefix .. to, now, id)
        end
        local function int(x) return string.format('%d', x) end
        local function hash(flat)
          local h = {}
          for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
          return h
        end
        -- The task's stream is its event outbox (EventRelay): a script that appends events passes its bucket's
        -- `events_pending` zset as its LAST key, and add_event marks the task there (ZADD NX: the one extra write).
        local INLINE_EVENT_LEASE_MS = 10000
        local EVENTS_PENDING = KEYS[#KEYS]
        if EVENTS_PENDING and not string.find(EVENTS_PENDING, 'events_pending:{', 1, true) then EVENTS_PENDING = nil end
        -- The task id of an events key (its member in `events_pending`), or nil.
        local function event_member(key)
          local root, rest = string.match(key, '{([^}]*)}(.*):events$')
          if root then return root .. rest end
          return nil
        end
        -- The events after which a task runs no step for a while: it was submitted (a queue may hold it), it waits,
        -- sleeps, backs off, is paused or parked for review, or it ended (its history is kept).
        local AT_REST = {submitted=true, waiting=true, sleeping=true, retrying=true, paused=true, needs_review=true,
          succeeded=true, failed=true, cancelled=true, budget_exceeded=true, dead_lettered=true}
        -- Redis (>= 6.2) allocates a stream's newest node at min(stream-node-max-bytes, 4 KiB) and shrinks a node only
        -- once it is full: a history of a few events held 4 KiB with Redis's defaults. A task at rest has its
        -- history rewritten at its exact size: DUMP and RESTORE of the same key keep its entries, ids, last id and
        -- entries-added (the relay's count); later events grow it one allocation class at a time. Only short
        -- histories (the cost grows with the entries: ~5 us for 22) and keys without a TTL (RESTORE would drop it).
        -- Best effort: where RESTORE is refused (an ACL without @dangerous) the stream stays as it is.
        local COMPACT_MAX_EVENTS = 128
        local function compact_events(key)
          if redis.call('XLEN', key) > COMPACT_MAX_EVENTS or redis.call('PTTL', key) ~= -1 then return end
          local dump = redis.pcall('DUMP', key)
          if type(dump) == 'string' then redis.pcall('RESTORE', key, 0, dump, 'REPLACE') end
        end
        -- `unmarked`: the caller scores the task in `events_pending` itself (the commit's hot path: one ZADD, not two).
        local function add_event(key, maxlen, etype, seq, branch, step, now, data, unmarked)
          local eid = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'type', etype, 'seq', seq, 'branch', branch,
            'step', step or '', 'at', now, 'data', data or '{}')
          if AT_REST[etype] then compact_events(key) end
          if EVENTS_PENDING and not unmarked then
            local member = event_member(key)
            if member then redis.call('ZADD', EVENTS_PENDING, 'NX', now, member) end
          end
          return eid
        end
        local function num(v) return tonumber(v or '0') or 0 end
        local function step_message(id, t)
          local body = cjson.encode({v=1, task=id, agent=t.agent, step=t.step, seq=tonumber(t.seq),
            branch=tonumber(t.branch), attempt=tonumber(t.attempt)})
          return cjson.encode({x='baton.steps', k=t.queue, b=body, h={['x-baton-task']=id}})
        end
        -- Which limit the counters of budget table `b` reach (>=), or nil.
        local function lim(b, name) local v = b[name]; if v and v ~= '' then return tonumber(v) end; return nil end
        local function reached(b, now)
          local m = lim(b, 'max_steps'); if m and num(b.steps) >= m then return 'steps' end
          m = lim(b, 'max_cost'); if m and num(b.cost) >= m then return 'cost' end
          m = lim(b, 'max_tokens'); if m and num(b.tokens) >= m then return 'tokens' end
          m = lim(b, 'max_tool_calls'); if m and num(b.tool_calls) >= m then return 'tool_calls' end
          m = lim(b, 'deadline'); if m and now >= m then return 'deadline' end
          return nil
        end
        -- A reached cap in words, with its limit when the budget table `b` has it: 'cost limit reached ($1.00)'.
        local function cap_text(over, b)
          local v = nil
          if over == 'cost' and b.max_cost and b.max_cost ~= '' then
            v = string.format('$%.2f', num(b.max_cost) / 1000000)
          elseif b['max_' .. over] and b['max_' .. over] ~= '' then
            v = b['max_' .. over]
          end
          if v then return over .. ' limit reached (' .. v .. ')' end
          return over .. ' limit reached'
        end
        -- Whether a reached cap parks the task in needs_review (the budget's on_limit is review) instead of stopping it.
        local function reviews(b) return b.review_on_limit == '1' end
        -- Parks a task in needs_review at a cap: no message, no lease; the raise script re-enqueues its step.
        -- k: task, events, index prefix.
        local function park(k, id, old_status, over, text, seq, branch, step, now, maxlen)
          redis.call('HSET', k.task, 'status', 'needs_review', 'updated_at', now, 'lease_owner', '', 'lease_until', 0,
            'status_reason', 'needs review: ' .. text, 'review', over)
          add_event(k.events, maxlen, 'needs_review', seq, branch, step, now, cjson.encode({kind=over, reason=text}))
          move_index(k.index, id, old_status, 'needs_review', now)
        end
        -- The tenant's day counter key (UTC day of Redis time) and its limits, or nil when the tenant has none.
        -- `limits_json` maps tenant → {cost=micros, tokens=n} (the workers' configuration).
        -- Year, month, day of `days` since 1970-01-01 (Howard Hinnant's civil_from_days).
        local function civil(days)
          local z = days + 719468
          local era = math.floor(z / 146097)
          local doe = z - era * 146097
          local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
          local y = yoe + era * 400
          local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
          local mp = math.floor((5 * doy + 2) / 153)
          local d = doy - math.floor((153 * mp + 2) / 5) + 1
          local m = mp + 3
          if mp >= 10 then m = mp - 9 end
          if m <= 2 then y = y + 1 end
          return y, m, d
        end
        local function tenant_limits(limits_json, prefix, tenant, now)
          if not limits_json or limits_json == '' or not tenant or tenant == '' then return nil end
          local l = cjson.decode(limits_json)[tenant]
          if not l then return nil end
          local y, m, d = civil(math.floor(now / 86400000))
          return prefix .. '{' .. tenant .. '}:' .. string.format('%04d-%02d-%02d', y, m, d), l
        end
        -- Which daily tenant limit the counters at `key` reached (>=), as words naming tenant and limit, or nil.
        local function tenant_reached(key, l, tenant)
          local c = redis.call('HMGET', key, 'cost', 'tokens')
          if l.cost and num(c[1]) >= l.cost then
            return 'tenant ' .. tenant .. ' daily cost', string.format('$%.2f', l.cost / 1000000) .. ' per day'
          end
          if l.tokens and num(c[2]) >= l.tokens then
            return 'tenant ' .. tenant .. ' daily tokens', int(l.tokens) .. ' per day'
          end
          return nil
        end

        """

    /// Helpers of the wait scripts (commit, signal, wait timer): ISO time, the wait's status reason, taking
    /// the earliest matching signal from a mailbox, and waking a task (outbox message, `woke` event).
    static let waits =
        common + """
            local function iso(ms)
              local s = math.floor(ms / 1000)
              local days = math.floor(s / 86400)
              local rem = s - days * 86400
              local y, m, d = civil(days)
              return string.format('%04d-%02d-%02dT%02d:%02d:%02dZ', y, m, d, math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60)
            end
            local function wait_reason(w)
              if w.k == 'sleep' and w.due_kind == 'deadline' then return 'sleeping until the deadline ' .. iso(w.due) end
              if w.k == 'sleep' then return 'sleeping until ' .. iso(w.due or 0) end
              local names = table.concat(w.signals or {}, ' or ')
              if w.k == 'children' then names = (w.n or 0) .. ' children' end
              if names == '' then names = 'a timer' end
              local text = 'waiting for ' .. names
              if w.due then
                if w.due_kind == 'time' then
                  text = text .. ', until ' .. iso(w.due)
                elseif w.due_kind == 'deadline' then
                  text = text .. ', deadline ' .. iso(w.due)
                else
                  text = text .. ', timeout ' .. iso(w.due)
                end
              end
              return text
            end
            -- Removes and returns the earliest signal in mailbox `key` whose name is one of `names`, or nil.
            local function take_signal(key, names)
              local want = {}
              for _, n in ipairs(names or {}) do want[n] = true end
              local all = redis.call('HGETALL', key)
              local best, best_key = nil, nil
              for i = 1, #all, 2 do
                local s = cjson.decode(all[i + 1])
                if want[s.name] and (not best or tonumber(s.n) < tonumber(best.n)) then best, best_key = s, all[i] end
              end
              if best then redis.call('HDEL', key, best_key) end
              return best
            end
            -- Wakes a waiting or sleeping task: `trig` says what fired; the resumed step's message goes to the
            -- outbox. k: task, events, outbox, outbox index, index prefix, timers keys.
            local function wake(k, id, w, trig, now, maxlen, outbox_id)
              local t = redis.call('HMGET', k.task, 'seq', 'branch', 'agent', 'queue', 'status', 'wait_timer')
              local step = w.next
              if trig.trigger ~= 'signal' and w.on_timeout then step = w.on_timeout end
              trig.woke_at = now
              if w.due then trig.due_at = w.due end
              redis.call('HSET', k.task, 'status', 'queued', 'step', step, 'attempt', 1, 'wakeup', cjson.encode(trig), 'wait', '',
                'wait_timer', '', 'next_timer', '', 'status_reason', '', 'updated_at', now)
              if t[6] and t[6] ~= '' then redis.call('ZREM', k.timers, t[6]) end
              local task = {agent=t[3], step=step, seq=t[1], branch=t[2], attempt=1, queue=t[4] or 'default'}
              redis.call('HSET', k.outbox, outbox_id, step_message(id, task))
              redis.call('ZADD', k.outbox_index, now, id)
              local data = {trigger=trig.trigger, name=trig.name, id=trig.id, actor=trig.actor, reason=trig.reason, due_at=trig.due_at}
              add_event(k.events, maxlen, 'woke', tonumber(t[1]), t[2], step, now, cjson.encode(data))
              move_index(k.index, id, t[5], 'queued', now)
            end
            -- Records a child's end in its parent's keys, once per child (a second call is a no-op); the last
            -- child to end wakes the parent's join step. pk: the parent's keys as the parallel commit wrote them.
            local function child_done(pk, id, status, result, err, now, maxlen)
              if not pk or pk == '' then return end
              local k = cjson.decode(pk)
              if redis.call('HEXISTS', k.children, id) == 1 then return end
              if not result or result == '' then result = 'null' end
              if not err or err == '' then err = 'null' end
              local rec
              if #result + #err > tonumber(k.max or 65536) then
                rec = '{"status":' .. cjson.encode(status) .. ',"result":null,"error":null,"truncated":true}'
              else
                rec = '{"status":' .. cjson.encode(status) .. ',"result":' .. result .. ',"error":' .. err .. '}'
              end
              redis.call('HSET', k.children, id, rec)
              local done = redis.call('HINCRBY', k.task, 'children_done', 1)
              local p = redis.call('HMGET', k.task, 'status', 'wait', 'children_total', 'seq')
              if p[1] == 'waiting' and p[2] and p[2] ~= '' and done >= num(p[3]) then
                local w = cjson.decode(p[2])
                if w.k == 'children' then
                  wake(k, k.id, w, {trigger='children', total=num(p[3])}, now, maxlen, 'join-' .. p[4])
                end
              end
            end
            -- Cancels the live children (and their children) of the task whose keys start with `base`: a queued,
            -- waiting or retrying child ends now; a running one gets the cancel flag (its step's commit ends it).
            local function cancel_children(base, id, total, index, data, now, maxlen, depth)
              for i = 1, total do
                local cb, cid = base .. '/' .. i, id .. '/' .. i
                local c = redis.call('HMGET', cb .. ':task', 'status', 'seq', 'branch', 'step', 'children_total', 'pk')
                if c[1] and not TERMINAL[c[1]] then
                  if c[1] == 'running' then
                    redis.call('HSET', cb .. ':task', 'cancel', data)
                  else
                    redis.call('HSET', cb .. ':task', 'status', 'cancelled', 'cancel', data, 'finished_at', now, 'updated_at', now,
                      'status_reason', 'the parent task was cancelled', 'wait', '', 'wait_timer', '', 'next_timer', '')
                    add_event(cb .. ':events', maxlen, 'cancelled', tonumber(c[2]), c[3], c[4], now, data)
                    move_index(index, cid, c[1], 'cancelled', now)
                    child_done(c[6], cid, 'cancelled', '', '', now, maxlen)
                    if depth < 8 and num(c[5]) > 0 then cancel_children(cb, cid, num(c[5]), index, data, now, maxlen, depth + 1) end
                  end
                end
              end
            end
            -- The limit that an ancestor's budget (`up`: their budget keys, one a line) has reached, or nil.
            local function reached_up(up, now)
              if not up or up == '' then return nil end
              for key in string.gmatch(up, '[^\\n]+') do
                local over = reached(hash(redis.call('HGETALL', key)), now)
                if over then return over end
              end
              return nil
            end

            """

    /// KEYS: task, budget, ckpt prefix, events, outbox, index prefix, outbox index.
    /// ARGV: id, agent, input, state, step, tenant, labels, notify, outbox id, outbox msg, events maxlen, queue,
    /// root, parent, then limit name/value pairs.
    static let submit =
        common + """
            if redis.call('EXISTS', KEYS[1]) == 1 then
              return {'exists', redis.call('HGET', KEYS[1], 'status')}
            end
            local now = now_ms()
            -- The fields every commit reads come first, in the order it reads them, then those it writes (a hash
            -- this small is a listpack: each field is found by a scan from the front). The neutral values written
            -- here are those a commit writes when it releases a step.
            redis.call('HSET', KEYS[1], 'fence', 0, 'seq', 0, 'status', 'queued', 'branch', 0, 'attempt', 1, 'step', ARGV[5],
              'events_cursor', '', 'agent', ARGV[2], 'notify', ARGV[8], 'events_published', 0, 'lease_owner', '', 'claims', 0,
              'updated_at', now, 'lease_until', 0, 'wakeup', '', 'status_reason', '', 'queue', ARGV[12], 'id', ARGV[1],
              'input', ARGV[3], 'created_at', now, 'tenant', ARGV[6], 'labels', ARGV[7], 'root', ARGV[13], 'parent', ARGV[14])
            local args = {'cost', 0, 'tokens', 0, 'steps', 0, 'tool_calls', 0, 'handoffs', 0}
            for i = 15, #ARGV, 2 do
              table.insert(args, ARGV[i])
              table.insert(args, ARGV[i + 1])
            end
            redis.call('HSET', KEYS[2], unpack(args))
            redis.call('SET', KEYS[3] .. '0', ARGV[4])
            add_event(KEYS[4], ARGV[11], 'submitted', 0, 0, ARGV[5], now, '{}')
            redis.call('HSET', KEYS[5], ARGV[9], ARGV[10])
            redis.call('ZADD', KEYS[7], now, ARGV[1])
            move_index(KEYS[6], ARGV[1], nil, 'queued', now)
            return {'created', 'queued'}
            """

    /// KEYS: task, budget, ckpt prefix (its checkpoint is read by the worker, beside the script), events, index prefix,
    /// workers, outbox, outbox index.
    /// ARGV: msg seq, msg branch, msg attempt, worker, lease ms, id, events maxlen, worker stale ms, max claims,
    /// tenant limits json (`""`: no tenant has limits), tenant key prefix. The reply's checkpoint and input slots are
    /// empty: the worker reads both with a plain `GET` and `HGET` behind this script when it does not hold them
    /// (``RedisTaskStore/claimCommands(_:worker:leaseMilliseconds:stateCached:)``). Redis's Lua copies and hashes every
    /// byte of a string it reads, ~1.5 µs of Redis CPU per KB; see the commit's staged checkpoint.
    static let claim =
        waits + """
            local t = redis.call('HMGET', KEYS[1], 'status', 'seq', 'branch', 'attempt', 'lease_owner', 'lease_until', 'step',
              'cancel', 'pause', 'agent', 'pk', 'started_at', 'fence', 'claims', 'queue', 'wakeup')
            local status = t[1]
            if not status then return {'missing'} end
            if TERMINAL[status] then return {'terminal', status} end
            local seq, branch, attempt = num(t[2]), num(t[3]), num(t[4])
            local mseq, mbranch, mattempt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
            if mbranch < branch then return {'stale', tostring(seq)} end
            if mbranch > branch then return {'future', 'the task is on branch ' .. branch .. ', the message names branch ' .. mbranch} end
            if mseq < seq then return {'stale', tostring(seq)} end
            if mseq > seq then return {'future', 'the task is at seq ' .. seq .. ', the message names seq ' .. mseq} end
            if mattempt < attempt then return {'stale', tostring(seq)} end
            if mattempt > attempt then return {'future', 'the task is at attempt ' .. attempt .. ', the message names attempt ' .. mattempt} end
            local now = now_ms()
            if t[5] and t[5] ~= '' and num(t[6]) > now then
              -- This worker's own unexpired lease: the delivery is a copy of a step it is running (even before its
              -- first heartbeat is written, or with that heartbeat late under load): never run it twice.
              if t[5] == ARGV[4] then return {'leased', t[5]} end
              local beat = redis.call('ZSCORE', KEYS[6], t[5])
              if beat and num(beat) > now - tonumber(ARGV[8]) then return {'leased', t[5]} end
            end
            if status == 'paused' or status == 'waiting' or status == 'sleeping' or status == 'needs_review' then
              return {'inactive', status}
            end
            if t[8] and t[8] ~= '' then
              redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', now, 'updated_at', now, 'lease_owner', '', 'lease_until', 0)
              add_event(KEYS[4], ARGV[7], 'cancelled', seq, branch, t[7], now, t[8])
              move_index(KEYS[5], ARGV[6], status, 'cancelled', now)
              child_done(t[11], ARGV[6], 'cancelled', '', '', now, ARGV[7])
              return {'stopped', 'cancelled'}
            end
            if t[9] and t[9] ~= '' then
              redis.call('HSET', KEYS[1], 'status', 'paused', 'pause', '', 'updated_at', now, 'lease_owner', '', 'lease_until', 0)
              add_event(KEYS[4], ARGV[7], 'paused', seq, branch, t[7], now, t[9])
              move_index(KEYS[5], ARGV[6], status, 'paused', now)
              return {'stopped', 'paused'}
            end
            local flat = redis.call('HGETALL', KEYS[2])
            local b = hash(flat)
            local over = reached(b, now)
            local text, stop_text = nil, nil
            if over then text, stop_text = cap_text(over, b), over .. ' limit reached' end
            -- The tenant is read only when some tenant has limits (no extra work otherwise).
            local tenant = ''
            if ARGV[10] and ARGV[10] ~= '' then tenant = redis.call('HGET', KEYS[1], 'tenant') or '' end
            if not over then
              local tkey, tl = tenant_limits(ARGV[10], ARGV[11], tenant, now)
              if tkey then
                local amount
                over, amount = tenant_reached(tkey, tl, tenant)
                if over then
                  text = over .. ' limit reached (' .. amount .. ')'
                  stop_text = text
                end
              end
            end
            if over and reviews(b) then
              park({task=KEYS[1], events=KEYS[4], index=KEYS[5]}, ARGV[6], status, over, text, seq, branch, t[7], now, ARGV[7])
              return {'stopped', 'needs_review', over}
            end
            -- A child stops when an ancestor's limit is reached too (their charges are shared; the parent's limit is
            -- not the child's to review).
            if not over and b.up then
              over = reached_up(b.up, now)
              if over then stop_text = over .. ' limit of the parent task reached' end
            end
            if over then
              local err = cjson.encode({code='budget_exceeded', message='the ' .. over .. ' limit was reached', bucket='budget', retryable=false})
              redis.call('HSET', KEYS[1], 'status', 'budget_exceeded', 'finished_at', now, 'updated_at', now, 'error', err,
                'lease_owner', '', 'lease_until', 0, 'status_reason', stop_text)
              add_event(KEYS[4], ARGV[7], 'budget_exceeded', seq, branch, t[7], now, cjson.encode({kind=over}))
              move_index(KEYS[5], ARGV[6], status, 'budget_exceeded', now)
              child_done(t[11], ARGV[6], 'budget_exceeded', '', err, now, ARGV[7])
              return {'stopped', 'budget_exceeded', over}
            end
            if num(t[14]) >= tonumber(ARGV[9]) then
              -- A poison step: claimed again and again without a commit (its workers died running it).
              local msg = 'the step was claimed ' .. t[14] .. ' times without a commit: the workers running it crashed or hung (a poison step)'
              local err = cjson.encode({code='delivery_limit', message=msg, bucket='poison', retryable=false})
              local body = cjson.encode({v=1, task=ARGV[6], agent=t[10], step=t[7], seq=seq, branch=branch, attempt=attempt})
              redis.call('HSET', KEYS[1], 'status', 'dead_lettered', 'error', err, 'finished_at', now, 'updated_at', now,
                'lease_owner', '', 'lease_until', 0, 'status_reason', 'delivery_limit')
              add_event(KEYS[4], ARGV[7], 'dead_lettered', seq, branch, t[7], now, err)
              move_index(KEYS[5], ARGV[6], status, 'dead_lettered', now)
              child_done(t[11], ARGV[6], 'dead_lettered', '', err, now, ARGV[7])
              redis.call('HSET', KEYS[7], 'poison-' .. seq .. '-' .. attempt, cjson.encode({x='baton.dlx', k=t[15] or 'default', b=body,
                h={['x-baton-reason']='delivery_limit', ['x-baton-error']=msg, ['x-baton-task']=ARGV[6], ['x-baton-agent']=t[10],
                   ['x-baton-step']=t[7], ['x-baton-seq']=tostring(seq), ['x-baton-branch']=tostring(branch),
                   ['x-baton-attempts']=tostring(attempt), ['x-baton-bucket']='poison', ['x-baton-worker']=ARGV[4]}}))
              redis.call('ZADD', KEYS[8], now, ARGV[6])
              return {'stopped', 'dead_lettered'}
            end
            local fence = num(t[13]) + 1
            local fields = {'status', 'running', 'lease_owner', ARGV[4], 'lease_until', now + tonumber(ARGV[5]), 'fence', fence,
              'updated_at', now, 'claims', num(t[14]) + 1}
            if status ~= 'running' then
              table.insert(fields, 'status_reason')
              table.insert(fields, '')
            end
            if not t[12] then
              table.insert(fields, 'started_at')
              table.insert(fields, now)
              add_event(KEYS[4], ARGV[7], 'started', seq, branch, t[7], now, '{}')
            end
            redis.call('HSET', KEYS[1], unpack(fields))
            if status ~= 'queued' and status ~= 'running' then move_index(KEYS[5], ARGV[6], status, 'running', now) end
            -- Checkpoint and input: read by the worker beside this script (empty slots, kept so the reply's shape holds).
            return {'run', tostring(fence), t[7], '', '', t[10], flat, tostring(now), t[16] or '', tenant}
            """

    /// KEYS: task, workers. ARGV: token, worker, lease ms.
    static let renew =
        common + """
            local t = redis.call('HMGET', KEYS[1], 'fence', 'lease_owner', 'status', 'cancel', 'pause')
            if t[1] ~= ARGV[1] or t[2] ~= ARGV[2] or t[3] ~= 'running' then return {0} end
            redis.call('HSET', KEYS[1], 'lease_until', now_ms() + tonumber(ARGV[3]))
            return {1, t[4] or '', t[5] or ''}
            """

    /// KEYS: task, budget, effects, charged effects. ARGV: token, cost, tokens, tool calls, effect key, effect record,
    /// mode (`charge`, `effect_get`, `effect_put`), tenant limits json (`""`: none), tenant key prefix. Charges are
    /// pending for this attempt (fields `p:<token>:…` of the budget hash) until the commit folds them in. A plain
    /// charge on the hot path writes nothing: the commit carries it (``Commit/charge``), as only the commit of the
    /// same token ever counts it.
    static let charge =
        common + """
            local t = redis.call('HMGET', KEYS[1], 'fence', 'status', 'tenant')
            if t[1] ~= ARGV[1] or t[2] ~= 'running' then return {'fenced'} end
            local cost, tokens, calls = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
            local record = ''
            local effect_key, put_record = nil, false
            if ARGV[7] == 'effect_get' or ARGV[7] == 'effect_put' then
              effect_key = ARGV[5]
              local existing = redis.call('HGET', KEYS[3], effect_key)
              if not existing and ARGV[7] == 'effect_get' then return {'absent'} end
              if not existing then
                put_record = true
              else
                record = existing
                local r = cjson.decode(existing)
                cost, tokens, calls = tonumber(r.c or 0), tonumber(r.t or 0), tonumber(r.k or 0)
                -- Charged once: not again when an earlier attempt's commit already counted it.
                if redis.call('SISMEMBER', KEYS[4], effect_key) == 1 then cost, tokens, calls = 0, 0, 0 end
              end
            end
            local pre = 'p:' .. ARGV[1] .. ':'
            local b = redis.call('HMGET', KEYS[2], pre .. 'cost', pre .. 'tokens', pre .. 'tool_calls', 'cost', 'max_cost', 'tokens',
              'max_tokens', 'tool_calls', 'max_tool_calls', pre .. 'effects')
            local pc, pt, pk, pe = num(b[1]), num(b[2]), num(b[3]), b[10] or ''
            local new_pe = nil
            if effect_key then
              -- Within one attempt an effect's charges count once, however often it is looked up.
              if string.find('\\n' .. pe, '\\n' .. effect_key .. '\\n', 1, true) then
                cost, tokens, calls = 0, 0, 0
              else
                new_pe = pe .. effect_key .. '\\n'
              end
            end
            -- A tenant with daily limits: a charge is admitted while the tenant's counter is below the limit (checked
            -- before any write); a refused charge counts nowhere.
            local over = ''
            local tkey, tl = nil, nil
            if cost > 0 or tokens > 0 then tkey, tl = tenant_limits(ARGV[8], ARGV[9], t[3], now_ms()) end
            local tc = nil
            if tkey then
              tc = redis.call('HMGET', tkey, 'cost', 'tokens')
              local name = 'tenant ' .. t[3] .. ' daily '
              if cost > 0 and tl.cost and num(tc[1]) >= tl.cost then return {'ok', name .. 'cost', record} end
              if tokens > 0 and tl.tokens and num(tc[2]) >= tl.tokens then return {'ok', name .. 'tokens', record} end
            end
            if put_record then redis.call('HSET', KEYS[3], effect_key, ARGV[6]) end
            if new_pe then redis.call('HSET', KEYS[2], pre .. 'effects', new_pe) end
            if cost ~= 0 then redis.call('HINCRBY', KEYS[2], pre .. 'cost', cost) end
            if tokens ~= 0 then redis.call('HINCRBY', KEYS[2], pre .. 'tokens', tokens) end
            if calls ~= 0 then redis.call('HINCRBY', KEYS[2], pre .. 'tool_calls', calls) end
            pc, pt, pk = pc + cost, pt + tokens, pk + calls
            if b[5] and b[5] ~= '' and num(b[4]) + pc > num(b[5]) then over = 'cost'
            elseif b[7] and b[7] ~= '' and num(b[6]) + pt > num(b[7]) then over = 'tokens'
            elseif b[9] and b[9] ~= '' and num(b[8]) + pk > num(b[9]) then over = 'tool_calls' end
            if tkey then
              -- Counted at once (crashed attempts' spend was real), kept two days past the UTC day.
              local c2 = redis.call('HINCRBY', tkey, 'cost', cost)
              local t2 = redis.call('HINCRBY', tkey, 'tokens', tokens)
              redis.call('EXPIRE', tkey, 172800)
              if over == '' and tl.cost and c2 > tl.cost then over = 'tenant ' .. t[3] .. ' daily cost'
              elseif over == '' and tl.tokens and t2 > tl.tokens then over = 'tenant ' .. t[3] .. ' daily tokens' end
            end
            return {'ok', over, record}
            """

    /// KEYS: task, events. ARGV: token, fraction, message, events maxlen, data json.
    static let progress =
        common + """
            local t = redis.call('HMGET', KEYS[1], 'fence', 'status', 'seq', 'branch', 'step')
            if t[1] ~= ARGV[1] or t[2] ~= 'running' then return 0 end
            local now = now_ms()
            redis.call('HSET', KEYS[1], 'progress_fraction', ARGV[2], 'progress_message', ARGV[3], 'updated_at', now)
            add_event(KEYS[2], ARGV[4], 'progress', t[3], t[4], t[5], now, ARGV[5])
            return 1
            """

    /// KEYS: task, budget, ckpt prefix, events, outbox, index prefix, outbox index, timers, charged effects (set),
    /// signals (mailbox), webhooks due, staged checkpoint, events pending.
    /// ARGV: token, seq, kind, state (empty when staged), next step, result/error json, outbox id, outbox msg, timer member,
    /// timer delay ms, keep checkpoints, events maxlen, id, detail (budget kind / bucket), event data json,
    /// wait spec json (kind `wait`) / parallel spec json (kind `parallel`: join, cap, children), then the step's
    /// charges that no store holds yet (cost micros, tokens, tool calls: ``Commit/charge``), then what it carries
    /// of an earlier confirmed event publish (``Commit/settledEvent``): expected and new relay cursor, webhook (`1`);
    /// then `1` for a speculative step (``Commit/speculative``) with its step name and branch; then how many events the
    /// carried publish held (``InlineEvent/count``); then the speculative step's limits (``BudgetLimits/fingerprint``); then `1`
    /// when the new checkpoint was staged (``RedisTaskStore/stagedCheckpointBytes``): written by a plain `SET` of the
    /// staged key (KEYS[12], with an expiry) in front of this script, which renames it to the new seq's checkpoint after
    /// its checks and before its first other write, or deletes it when fenced. Answers `{'ok', status, seq[, event]}`,
    /// `{'fenced'}`, or `{'unclaimed'}` (a speculative step that must be claimed first).
    ///
    /// A child (field `pk`: its parent's keys) records its end in its parent's keys and may wake the parent's
    /// join; a child's charges are added to its ancestors' counters (budget field `up`), whose limits stop it too.
    static let commit =
        waits + """
            local t = redis.call('HMGET', KEYS[1], 'fence', 'seq', 'status', 'branch', 'attempt', 'step', 'cancel', 'pause', 'pk',
              'events_cursor', 'agent', 'notify', 'progress_fraction', 'progress_message', 'events_published', 'lease_owner', 'claims', 'started_at',
              'lease_until', 'status_reason', 'wakeup')
            -- The stored values of the fields every commit sets: one it would set to what it holds is left alone (a
            -- speculative step changes four of eleven: fewer listpack edits, a shorter HSET in the AOF).
            local stored_status, stored_attempt, stored_step = t[3], t[5], t[6]
            local now = now_ms()
            local flat = redis.call('HGETALL', KEYS[2])
            local b = hash(flat)
            -- The limits of budget table `b` as BudgetLimits.fingerprint writes them.
            local function limits_of(b)
              -- As stored (the workers write every limit as a plain integer): one string, no number formatting (the
              -- loop below was ~4 % of Redis's CPU per hop, measured by replaying a bench run's commands).
              local raw = (b.max_cost or '') .. ',' .. (b.max_tokens or '') .. ',' .. (b.max_steps or '') .. ',' ..
                (b.max_tool_calls or '') .. ',' .. (b.max_handoffs or '') .. ',' .. (b.deadline or '') .. ',' ..
                (b.review_on_limit == '1' and '1' or '')
              if raw == ARGV[27] then return raw end
              local out = {}
              for _, k in ipairs({'max_cost', 'max_tokens', 'max_steps', 'max_tool_calls', 'max_handoffs', 'deadline'}) do
                local v = b[k]
                if v and v ~= '' then table.insert(out, tostring(tonumber(v))) else table.insert(out, '') end
              end
              if b.review_on_limit == '1' then table.insert(out, '1') else table.insert(out, '') end
              return table.concat(out, ',')
            end
            if ARGV[23] == '1' then
              -- A speculative step (StepLease): run without a claim from the worker's own state right after its commit of
              -- the previous step. It commits only when nothing happened since that commit that a claim would have seen:
              -- same fence, seq, branch, step and first attempt, still queued, no lease, no claim, no cancel or pause flag,
              -- no budget limit reached, the limits it ran under unchanged (`raise`). Else nothing is written here: the worker claims the step (which stops a cancelled,
              -- paused or spent task before this step, as DESIGN.md §5 step 4 says) and, given it, commits again.
              if t[1] ~= ARGV[1] or t[2] ~= ARGV[2] or t[3] ~= 'queued' or t[4] ~= ARGV[25] or t[5] ~= '1' or t[6] ~= ARGV[24]
                or (t[16] and t[16] ~= '') or num(t[17]) ~= 0 or (t[7] and t[7] ~= '') or (t[8] and t[8] ~= '')
                or reached(b, now) or (b.up and b.up ~= '') or limits_of(b) ~= ARGV[27] then
                if ARGV[28] == '1' then redis.call('DEL', KEYS[12]) end
                return {'unclaimed'}
              end
              t[3] = 'running'
            elseif t[1] ~= ARGV[1] or t[2] ~= ARGV[2] or t[3] ~= 'running' then
              if ARGV[28] == '1' then redis.call('DEL', KEYS[12]) end
              return {'fenced'}
            end
            -- The kinds that commit a checkpoint (seq + 1); retry and dead keep the last one.
            local ADVANCES = {next=true, handoff=true, complete=true, fail=true, budget=true, wait=true, parallel=true}
            if ARGV[28] == '1' and ADVANCES[ARGV[3]] then
              -- The staged checkpoint (a large state passed beside the script, not through Lua, which copies and hashes
              -- every byte of every argument): it becomes the next seq's checkpoint here, before any other write, so a
              -- missing one (Redis refused the SET) stops the commit with nothing written.
              local into = KEYS[3] .. int(tonumber(t[2]) + 1)
              redis.call('RENAME', KEYS[12], into)
              redis.call('PERSIST', into)
            elseif ARGV[28] == '1' then
              redis.call('DEL', KEYS[12])
            end
            local id, kind = ARGV[13], ARGV[3]
            local detail_json = ARGV[6]
            -- A speculative first step (run right after the submit, by the worker that took it): what its claim would
            -- have written, the start time and the `started` event, ahead of the step's own event.
            local started_now = ARGV[23] == '1' and not t[18]
            if started_now then add_event(KEYS[4], ARGV[12], 'started', t[2], t[4], t[6], int(now), '{}') end
            -- The event this worker published for the task's previous step (StepExecutor's SettledPublishes): its relay
            -- cursor moves on (a compare-and-set, as eventsAdvance; the cursor fields are written with the task's
            -- other fields below).
            local cursor, cursor_moved, events_clear = t[10] or '', false, false
            if ARGV[21] and ARGV[21] ~= '' and EVENTS_PENDING and cursor == ARGV[20] then
              cursor, cursor_moved = ARGV[21], true
              if ARGV[22] == '1' then redis.call('ZADD', KEYS[11], 'NX', now, id) end
              if #redis.call('XRANGE', KEYS[4], '(' .. cursor, '+', 'COUNT', 1) == 0 then
                -- Every event is published. The task stays in events_pending under the old inline lease: this commit
                -- appends an event below and then scores the task once, due now or a new inline lease (ZREM then ZADD
                -- would be two writes for the same end).
                events_clear = true
              else
                -- More events wait (a progress event, a signal's): due now, for the relay or this commit's takeover below.
                -- (The score being reset was this worker's inline lease: the cursor's compare-and-set just matched. Only
                -- if the carry came over 10 s late could a relay hold it by now; then an event may go out twice.)
                redis.call('ZADD', EVENTS_PENDING, now, id)
              end
            end
            local spec, children_before = nil, 0
            if kind == 'parallel' then
              spec = cjson.decode(ARGV[16])
              children_before = num(redis.call('HGET', KEYS[1], 'children_total'))
              if children_before + #spec.children > tonumber(spec.cap) then
                -- Over the cap of children per task: the task fails (its state is committed), nothing is created.
                kind = 'fail'
                local msg = 'step ' .. t[6] .. ' started ' .. #spec.children .. ' children after ' .. children_before ..
                  ', over the cap of ' .. spec.cap .. ' children per task (limits.max_children)'
                detail_json = cjson.encode({code='max_children', message=msg, bucket='max_children', retryable=false})
                spec = nil
              end
            end
            local seq, branch, attempt, step = tonumber(t[2]), t[4], tonumber(t[5]), t[6]
            -- Fold this attempt's pending charges in; drop every attempt's pending fields (a fenced-off
            -- attempt's charges never count).
            local pre = 'p:' .. ARGV[1] .. ':'
            -- This attempt's charges: those recorded by the charge script (effects, tenants) plus those it carries.
            local dcost = num(b[pre .. 'cost']) + num(ARGV[17])
            local dtokens = num(b[pre .. 'tokens']) + num(ARGV[18])
            local dcalls = num(b[pre .. 'tool_calls']) + num(ARGV[19])
            b.cost = num(b.cost) + dcost
            b.tokens = num(b.tokens) + dtokens
            b.tool_calls = num(b.tool_calls) + dcalls
            -- The effects whose charges are now counted are never charged again.
            for key in string.gmatch(b[pre .. 'effects'] or '', '([^\\n]+)') do
              redis.call('SADD', KEYS[9], key)
            end
            local stale = {}
            for i = 1, #flat, 2 do
              if string.byte(flat[i], 1) == 112 and string.byte(flat[i], 2) == 58 then table.insert(stale, flat[i]) end -- 'p:'
            end
            if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
            local newseq = seq
            if ADVANCES[kind] then
              newseq = seq + 1
              if ARGV[28] ~= '1' then redis.call('SET', KEYS[3] .. int(newseq), ARGV[4]) end
              local old = newseq - tonumber(ARGV[11])
              if old >= 0 then redis.call('DEL', KEYS[3] .. int(old)) end
              b.steps = num(b.steps) + 1
            end
            if kind == 'handoff' then b.handoffs = num(b.handoffs) + 1 end
            -- The counters this commit changed (a missing field reads as 0).
            local counters = {}
            -- (Their text is reused by the inline event's reply below: a string.format costs ~1 µs.)
            local cost_s, tokens_s = nil, nil
            if dcost ~= 0 then cost_s = int(b.cost); counters[#counters + 1] = 'cost'; counters[#counters + 1] = cost_s end
            if dtokens ~= 0 then tokens_s = int(b.tokens); counters[#counters + 1] = 'tokens'; counters[#counters + 1] = tokens_s end
            if dcalls ~= 0 then counters[#counters + 1] = 'tool_calls'; counters[#counters + 1] = int(b.tool_calls) end
            if newseq ~= seq then counters[#counters + 1] = 'steps'; counters[#counters + 1] = int(b.steps) end
            if kind == 'handoff' then counters[#counters + 1] = 'handoffs'; counters[#counters + 1] = int(num(b.handoffs)) end
            if #counters > 0 then redis.call('HSET', KEYS[2], unpack(counters)) end
            local over_up = nil
            if b.up and b.up ~= '' then
              -- A child: its charges and steps count against every ancestor's budget too.
              local dc, dt, dk, ds = dcost, dtokens, dcalls, 0
              if newseq ~= seq then ds = 1 end
              for key in string.gmatch(b.up, '[^\\n]+') do
                if dc ~= 0 then redis.call('HINCRBY', key, 'cost', dc) end
                if dt ~= 0 then redis.call('HINCRBY', key, 'tokens', dt) end
                if dk ~= 0 then redis.call('HINCRBY', key, 'tool_calls', dk) end
                if ds ~= 0 then redis.call('HINCRBY', key, 'steps', ds) end
              end
              over_up = reached_up(b.up, now)
            end
            local status, etype, reason = nil, nil, ''
            -- Integers as text once: a Lua number given to redis.call is formatted with printf's %.17g each time.
            local now_s, newseq_s = int(now), int(newseq)
            local fields = {'seq', newseq_s, 'updated_at', now_s}
            if t[16] ~= '' then table.insert(fields, 'lease_owner'); table.insert(fields, '') end
            if t[19] ~= '0' then table.insert(fields, 'lease_until'); table.insert(fields, '0') end
            if t[17] ~= '0' then table.insert(fields, 'claims'); table.insert(fields, '0') end
            if started_now then
              table.insert(fields, 'started_at')
              table.insert(fields, now_s)
            end
            if cursor_moved then
              table.insert(fields, 'events_cursor')
              table.insert(fields, cursor)
              table.insert(fields, 'events_published')
              table.insert(fields, int(num(t[15]) + tonumber(ARGV[26] or '1')))
            end
            -- What woke the task is for the step it resumed only.
            if newseq ~= seq and t[21] ~= '' then
              table.insert(fields, 'wakeup')
              table.insert(fields, '')
            end
            local w = nil
            local event_data = ARGV[15]
            local review_over = nil
            if kind == 'wait' or kind == 'parallel' then
              local over = reached(b, now)
              -- A task that asked for review waits anyway: waiting spends nothing, and the claim of the resumed step
              -- (or the deadline's timer) parks it.
              if over and reviews(b) then over = nil end
              local own = over
              over = over or over_up
              if t[7] and t[7] ~= '' then
                status, etype = 'cancelled', 'cancelled'
              elseif over then
                status, etype, reason = 'budget_exceeded', 'budget_exceeded', over .. ' limit reached'
                if not own then reason = over .. ' limit of the parent task reached' end
                table.insert(fields, 'error')
                table.insert(fields, cjson.encode({code='budget_exceeded', message='the ' .. over .. ' limit was reached', bucket='budget', retryable=false}))
              else
                if spec then
                  w = {k='children', next=spec.join, n=#spec.children}
                else
                  w = cjson.decode(ARGV[16])
                end
                step = w.next
                local due, due_kind = nil, nil
                -- A sleep's delay (sleep(for:)) is due as a time; a wait's is its timeout.
                if w.delay_ms then due, due_kind = now + tonumber(w.delay_ms), (w.k == 'sleep' and 'time' or 'timeout') end
                if w.at_ms and (not due or tonumber(w.at_ms) < due) then due, due_kind = tonumber(w.at_ms), 'time' end
                -- The budget's deadline ends a wait too: its timer stops the task (budget_exceeded) then.
                local deadline = tonumber(b.deadline or '')
                if deadline and (not due or deadline < due) then due, due_kind = deadline, 'deadline' end
                w.delay_ms, w.at_ms, w.due, w.due_kind, w.since = nil, nil, due, due_kind, now
                if w.k == 'sleep' then status, etype = 'sleeping', 'sleeping' else status, etype = 'waiting', 'waiting' end
                reason = wait_reason(w)
                local data = {next=w.next, on_timeout=w.on_timeout, children=w.n}
                if #(w.signals or {}) > 0 then data.signals = w.signals end
                if due then
                  if due_kind == 'time' then
                    data.at = iso(due)
                  elseif due_kind == 'deadline' then
                    data.deadline = iso(due)
                  else
                    data.timeout_at = iso(due)
                  end
                  table.insert(fields, 'next_timer')
                  table.insert(fields, due)
                end
                event_data = cjson.encode(data)
              end
              attempt = 1
            elseif kind == 'next' or kind == 'handoff' then
              local over = reached(b, now)
              if not over and b.max_handoffs and b.max_handoffs ~= '' and num(b.handoffs) > num(b.max_handoffs) then over = 'handoffs' end
              -- An ancestor's limit stops a child (the parent's limit is not the child's to review).
              local own = over
              over = over or over_up
              if t[7] and t[7] ~= '' then
                status, etype = 'cancelled', 'cancelled'
              elseif own and reviews(b) then
                review_over = own
              elseif over then
                status, etype, reason = 'budget_exceeded', 'budget_exceeded', over .. ' limit reached'
                if not own then reason = over .. ' limit of the parent task reached' end
                table.insert(fields, 'error')
                table.insert(fields, cjson.encode({code='budget_exceeded', message='the ' .. over .. ' limit was reached', bucket='budget', retryable=false}))
              elseif t[8] and t[8] ~= '' then
                status, etype = 'paused', 'paused'
                table.insert(fields, 'pause')
                table.insert(fields, '')
              else
                status = 'queued'
                if kind == 'handoff' then etype = 'handoff' else etype = 'step_committed' end
              end
              if kind == 'next' then step = ARGV[5] end
              attempt = 1
            elseif kind == 'complete' then
              status, etype = 'succeeded', 'succeeded'
              table.insert(fields, 'result')
              table.insert(fields, ARGV[6])
            elseif kind == 'fail' then
              status, etype = 'failed', 'failed'
              table.insert(fields, 'error')
              table.insert(fields, detail_json)
              if detail_json ~= ARGV[6] then event_data = detail_json end
            elseif kind == 'budget' and reviews(b) and not (t[7] and t[7] ~= '') then
              -- The step stopped at a charge: its partial state is committed and the same step runs again on resume.
              review_over = ARGV[14]
            elseif kind == 'budget' then
              status, etype, reason = 'budget_exceeded', 'budget_exceeded', ARGV[14] .. ' limit reached'
              table.insert(fields, 'error')
              table.insert(fields, ARGV[6])
            elseif kind == 'retry' then
              status, etype = 'retrying', 'retrying'
              attempt = attempt + 1
              reason = 'attempt ' .. attempt .. ' after ' .. ARGV[14]
              table.insert(fields, 'error')
              table.insert(fields, ARGV[6])
              table.insert(fields, 'next_timer')
              table.insert(fields, now + tonumber(ARGV[10]))
              redis.call('ZADD', KEYS[8], now + tonumber(ARGV[10]), ARGV[9])
            elseif kind == 'dead' then
              status, etype, reason = 'dead_lettered', 'dead_lettered', ARGV[14]
              table.insert(fields, 'error')
              table.insert(fields, ARGV[6])
            elseif kind ~= 'wait' and kind ~= 'parallel' then
              return redis.error_reply('unknown commit kind ' .. kind)
            end
            if review_over then
              status, etype, reason = 'needs_review', 'needs_review', 'needs review: ' .. cap_text(review_over, b)
              event_data = cjson.encode({kind=review_over, reason=cap_text(review_over, b)})
              table.insert(fields, 'review')
              table.insert(fields, review_over)
            end
            if status ~= stored_status then
              table.insert(fields, 'status')
              table.insert(fields, status)
            end
            if step ~= stored_step then
              table.insert(fields, 'step')
              table.insert(fields, step)
            end
            local attempt_s = int(attempt)
            if attempt_s ~= stored_attempt then
              table.insert(fields, 'attempt')
              table.insert(fields, attempt_s)
            end
            if reason ~= t[20] then
              table.insert(fields, 'status_reason')
              table.insert(fields, reason)
            end
            if TERMINAL[status] then
              table.insert(fields, 'finished_at')
              table.insert(fields, now_s)
            end
            redis.call('HSET', KEYS[1], unpack(fields))
            -- The commit's fencing token and what it added to the counters (`baton verify` sums them).
            -- (A zero, the usual charge, without string.format.)
            local counted = '"fence":' .. ARGV[1] .. ',"charged":{"cost":' .. (dcost == 0 and '0' or int(dcost)) ..
              ',"tokens":' .. (dtokens == 0 and '0' or int(dtokens)) .. ',"tool_calls":' .. (dcalls == 0 and '0' or int(dcalls)) ..
              ',"steps":' .. (newseq ~= seq and '1' or '0') .. '}'
            if event_data == '' or event_data == '{}' then
              event_data = '{' .. counted .. '}'
            elseif string.sub(event_data, 1, 1) == '{' and string.sub(event_data, -1) == '}' then
              event_data = string.sub(event_data, 1, -2) .. ',' .. counted .. '}'
            end
            -- The hot path publishes its event itself (DESIGN.md §5: events go out with the outbox): when every
            -- earlier event of the task is published (the task is not in events_pending), the event is returned
            -- for the worker to publish with its next step, and the task is marked a lease ahead, so the relay
            -- takes it over only if that worker dies before it advances the cursor (EventRelay).
            local inline, earlier = nil, {}
            -- A task's last event (succeeded, failed) goes out the same way: no next commit carries its cursor, so the
            -- worker moves it on its own once the broker confirmed the publish (SettledPublishes).
            local hot = (status == 'queued' and (kind == 'next' or kind == 'handoff')) or
              ((status == 'succeeded' or status == 'failed') and (kind == 'complete' or kind == 'fail'))
            if hot and EVENTS_PENDING then
              local member = event_member(KEYS[4])
              if member and events_clear then
                inline = member
              elseif member then
                local score = redis.call('ZSCORE', EVENTS_PENDING, member)
                if not score then
                  inline = member
                elseif tonumber(score) <= now then
                  -- Events due for the relay and not taken by it yet (a task's first ones: submitted, started; or those
                  -- of a worker that died before its confirm): when few, they go out with this one, in order, and the
                  -- inline lease below keeps the relay off them. An event a worker is still publishing (its lease in the
                  -- future) is never taken over.
                  local start = '-'
                  if cursor ~= '' then start = '(' .. cursor end
                  earlier = redis.call('XRANGE', KEYS[4], start, '+', 'COUNT', 9)
                  if #earlier <= 8 then inline = member else earlier = {} end
                end
              end
            end
            local eid = add_event(KEYS[4], ARGV[12], etype, newseq_s, branch, step, now_s, event_data, inline or events_clear)
            local inline_reply = nil
            if events_clear and not inline then
              local member = event_member(KEYS[4])
              if member then redis.call('ZADD', EVENTS_PENDING, now_s, member) end
            end
            if inline then
              redis.call('ZADD', EVENTS_PENDING, int(now + INLINE_EVENT_LEASE_MS), inline)
              inline_reply = {eid, cursor, t[11] or '', t[12] or '', t[13] or '', t[14] or '', cost_s or int(num(b.cost)), tokens_s or int(num(b.tokens)),
                etype, newseq_s, tostring(branch), step, now_s, event_data or '{}', earlier}
            end
            if status == 'queued' or status == 'dead_lettered' then
              redis.call('HSET', KEYS[5], ARGV[7], ARGV[8])
              redis.call('ZADD', KEYS[7], now_s, id)
            end
            move_index(KEYS[6], id, t[3], status, now_s)
            if TERMINAL[status] and t[9] and t[9] ~= '' then
              local res, err = '', ''
              if status == 'succeeded' then res = ARGV[6] else err = redis.call('HGET', KEYS[1], 'error') or '' end
              child_done(t[9], id, status, res, err, now, ARGV[12])
            end
            if w and w.k == 'children' then
              -- The children: tasks of their own under this task's hash tag and bucket, created here with their
              -- budgets and index entries; their first step messages go to this task's outbox.
              local pbase = string.sub(KEYS[1], 1, -6)
              local p = redis.call('HMGET', KEYS[1], 'tenant', 'root')
              local up = KEYS[2]
              if b.up and b.up ~= '' then up = up .. '\\n' .. b.up end
              local pk = cjson.encode({id=id, task=KEYS[1], events=KEYS[4], outbox=KEYS[5], outbox_index=KEYS[7], index=KEYS[6],
                timers=KEYS[8], children=pbase .. ':children', max=spec.max_result})
              for i, c in ipairs(spec.children) do
                local n = children_before + i
                local cid, cb = id .. '/' .. n, pbase .. '/' .. n
                -- In the order of the submit's fields (hot ones first).
                redis.call('HSET', cb .. ':task', 'fence', 0, 'seq', 0, 'status', 'queued', 'branch', 0, 'attempt', 1, 'step', c.step,
                  'pk', pk, 'events_cursor', '', 'agent', c.agent, 'notify', '{}', 'events_published', 0, 'lease_owner', '',
                  'claims', 0, 'updated_at', now, 'lease_until', 0, 'wakeup', '', 'status_reason', '', 'queue', c.queue, 'id', cid,
                  'input', c.input, 'created_at', now, 'tenant', p[1] or '', 'labels', '{}', 'root', p[2] or id, 'parent', id)
                local bargs = {'cost', 0, 'tokens', 0, 'steps', 0, 'tool_calls', 0, 'handoffs', 0, 'up', up}
                for j = 1, #c.limits, 2 do
                  table.insert(bargs, c.limits[j])
                  table.insert(bargs, c.limits[j + 1])
                end
                redis.call('HSET', cb .. ':budget', unpack(bargs))
                redis.call('SET', cb .. ':ckpt:0', c.state)
                add_event(cb .. ':events', ARGV[12], 'submitted', 0, 0, c.step, now, cjson.encode({parent=id}))
                redis.call('HSET', KEYS[5], 'child-' .. cid, step_message(cid, {agent=c.agent, step=c.step, seq=0, branch=0, attempt=1, queue=c.queue}))
                move_index(KEYS[6], cid, nil, 'queued', now)
              end
              redis.call('HSET', KEYS[1], 'children_total', children_before + #spec.children)
              redis.call('ZADD', KEYS[7], now, id)
              if #spec.children == 0 then
                local k = {task=KEYS[1], events=KEYS[4], outbox=KEYS[5], outbox_index=KEYS[7], index=KEYS[6], timers=KEYS[8]}
                redis.call('HSET', KEYS[1], 'wait', cjson.encode(w))
                wake(k, id, w, {trigger='children', total=0}, now, ARGV[12], ARGV[7])
                return {'ok', 'queued', newseq_s}
              end
              w.signals = {}
            end
            if w then
              -- A signal that arrived before the wait began is consumed now; a time already passed fires now.
              local k = {task=KEYS[1], events=KEYS[4], outbox=KEYS[5], outbox_index=KEYS[7], index=KEYS[6], timers=KEYS[8]}
              local sig = nil
              if w.k ~= 'children' then sig = take_signal(KEYS[10], w.signals) end
              if sig then
                wake(k, id, w, {trigger='signal', name=sig.name, id=sig.id, p=sig.p, actor=sig.actor, reason=sig.reason, at=sig.at},
                  now, ARGV[12], ARGV[7])
                return {'ok', 'queued', newseq_s}
              end
              if w.due and w.due <= now then
                wake(k, id, w, {trigger=w.due_kind}, now, ARGV[12], ARGV[7])
                return {'ok', 'queued', newseq_s}
              end
              local member = ''
              if w.due then
                member = cjson.encode({wake=id, seq=newseq, branch=tonumber(branch)})
                redis.call('ZADD', KEYS[8], w.due, member)
              end
              redis.call('HSET', KEYS[1], 'wait', cjson.encode(w), 'wait_timer', member)
            end
            if inline_reply then
              -- The event's fourteen fields as one string, joined by NUL bytes, when none holds one (a field an agent
              -- wrote may): one bulk string instead of fourteen, which the worker reads with ~24 fewer allocations.
              -- Else, or when a field is missing, the fields as an array (RedisTaskStore.inlineEvent reads both).
              local earlier = inline_reply[15]
              local packed = true
              for i = 1, 14 do
                local v = inline_reply[i]
                if type(v) ~= 'string' or string.find(v, '\0', 1, true) then packed = false; break end
              end
              if packed then
                inline_reply[15] = nil
                return {'ok', status, newseq_s, table.concat(inline_reply, '\0'), earlier}
              end
              return {'ok', status, newseq_s, inline_reply}
            end
            return {'ok', status, newseq_s}
            """

    /// Delivers a signal. KEYS: task, signals (mailbox), seen ids (zset), events, outbox, outbox index,
    /// index prefix, timers. ARGV: id, name, payload json, signal id, actor, reason, events maxlen, outbox id,
    /// mailbox cap, seen ids kept, event data json.
    static let signal =
        waits + """
            local t = redis.call('HMGET', KEYS[1], 'status', 'wait', 'seq', 'branch', 'step', 'signal_n')
            local status = t[1]
            if not status then return {'missing'} end
            -- A resend of a signal already received is a no-op, even once the task has ended.
            if redis.call('ZSCORE', KEYS[3], ARGV[4]) then return {'duplicate', status} end
            if TERMINAL[status] then return {'terminal', status} end
            local w = nil
            if status == 'waiting' and t[2] and t[2] ~= '' then
              local candidate = cjson.decode(t[2])
              for _, n in ipairs(candidate.signals or {}) do
                if n == ARGV[2] then w = candidate end
              end
            end
            if not w and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[9]) then return {'full', status} end
            local now = now_ms()
            redis.call('ZADD', KEYS[3], now, ARGV[4])
            local kept = tonumber(ARGV[10])
            if redis.call('ZCARD', KEYS[3]) > kept then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(kept + 1)) end
            local n = num(t[6]) + 1
            redis.call('HSET', KEYS[1], 'signal_n', n, 'updated_at', now)
            add_event(KEYS[4], ARGV[7], 'signal_received', tonumber(t[3]), t[4], t[5], now, ARGV[11])
            if w then
              local k = {task=KEYS[1], events=KEYS[4], outbox=KEYS[5], outbox_index=KEYS[6], index=KEYS[7], timers=KEYS[8]}
              wake(k, ARGV[1], w, {trigger='signal', name=ARGV[2], id=ARGV[4], p=ARGV[3], actor=ARGV[5], reason=ARGV[6], at=now},
                now, ARGV[7], ARGV[8])
              return {'woke', 'queued'}
            end
            redis.call('HSET', KEYS[2], ARGV[4], cjson.encode({n=n, id=ARGV[4], name=ARGV[2], p=ARGV[3], actor=ARGV[5], reason=ARGV[6], at=now}))
            return {'stored', status}
            """

    /// Fires a wait or sleep timer: wakes the task only if it still waits on this very timer (a signal that
    /// won the race already removed it). KEYS: task, events, outbox, outbox index, index prefix, timers.
    /// ARGV: id, timer member, events maxlen, outbox id. Returns `{'woke', 'queued', outbox id, message}`.
    static let fireWaitTimer =
        waits + """
            local t = redis.call('HMGET', KEYS[1], 'status', 'wait', 'wait_timer', 'seq', 'branch', 'step', 'pk', 'children_total')
            if not t[1] or (t[1] ~= 'waiting' and t[1] ~= 'sleeping') or t[3] ~= ARGV[2] then return {'ignored', t[1] or ''} end
            local w = cjson.decode(t[2])
            if w.due_kind == 'deadline' then
              -- The budget's deadline came first: the task stops where it waits, its state kept.
              local now = now_ms()
              -- The budget hash sits next to the task hash (`…:task` → `…:budget`, the same slot).
              local budget_key = string.sub(KEYS[1], 1, -6) .. ':budget'
              if reviews(hash(redis.call('HGETALL', budget_key))) then
                -- Parked instead: a raise resumes the wait's timeout step (else its `then` step), as if it timed out.
                local step = w.on_timeout or w.next
                redis.call('HSET', KEYS[1], 'step', step, 'attempt', 1, 'wait', '', 'wait_timer', '', 'next_timer', '',
                  'wakeup', cjson.encode({trigger='timeout', woke_at=now, due_at=w.due}))
                park({task=KEYS[1], events=KEYS[2], index=KEYS[5]}, ARGV[1], t[1], 'deadline', 'deadline limit reached',
                  tonumber(t[4]), t[5], step, now, ARGV[3])
                return {'stopped', 'needs_review'}
              end
              local err = cjson.encode({code='budget_exceeded', message='the deadline limit was reached', bucket='budget', retryable=false})
              redis.call('HSET', KEYS[1], 'status', 'budget_exceeded', 'error', err, 'finished_at', now, 'updated_at', now,
                'status_reason', 'deadline limit reached', 'wait', '', 'wait_timer', '', 'next_timer', '')
              add_event(KEYS[2], ARGV[3], 'budget_exceeded', tonumber(t[4]), t[5], t[6], now, cjson.encode({kind='deadline'}))
              move_index(KEYS[5], ARGV[1], t[1], 'budget_exceeded', now)
              child_done(t[7], ARGV[1], 'budget_exceeded', '', err, now, ARGV[3])
              if num(t[8]) > 0 then
                local data = cjson.encode({reason='the parent task reached its deadline', actor='baton'})
                cancel_children(string.sub(KEYS[1], 1, -6), ARGV[1], num(t[8]), KEYS[5], data, now, ARGV[3], 0)
              end
              return {'stopped', 'budget_exceeded'}
            end
            local k = {task=KEYS[1], events=KEYS[2], outbox=KEYS[3], outbox_index=KEYS[4], index=KEYS[5], timers=KEYS[6]}
            wake(k, ARGV[1], w, {trigger=w.due_kind or 'time'}, now_ms(), ARGV[3], ARGV[4])
            return {'woke', 'queued', ARGV[4], redis.call('HGET', KEYS[3], ARGV[4])}
            """

    /// Finds the wait and sleep timers that come due within the pre-warm lead (`sweeps.prewarm_lead`), in every
    /// bucket in one call. Each bucket keeps how far ahead it was looked at (its `prewarm` key, written only when a
    /// round found timers: an idle fleet's rounds write nothing, so the AOF stays quiet). The claim is atomic, so two
    /// workers never take the same timers; only a lost mark (a failover) returns timers again, which the `prewarn`
    /// script dedupes. KEYS: the timer buckets, then the buckets' `prewarm` keys. ARGV: lead ms, limit per bucket.
    /// Returns `bucket, member` pairs.
    static let claimPrewarm =
        common + """
            local now = now_ms()
            local lead, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
            local n = #KEYS / 2
            local upper = now + lead
            local out = {}
            for i = 1, n do
              local from = tonumber(redis.call('GET', KEYS[n + i]) or '') or now
              if from < now then from = now end
              if upper > from then
                local found = redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. int(from), upper, 'WITHSCORES', 'LIMIT', 0, limit)
                local stop = #found
                if stop > 0 then
                  local seen = upper
                  if stop >= 2 * limit then
                    -- A full page: the next round goes on after the last score taken whole. The timers that share the
                    -- page's last score are left to it (some of them did not fit), unless the whole page shares one
                    -- score: then every timer of that score is taken now.
                    local last = found[stop]
                    while stop > 0 and found[stop] == last do stop = stop - 2 end
                    if stop == 0 then
                      found = redis.call('ZRANGEBYSCORE', KEYS[i], last, last, 'WITHSCORES')
                      stop = #found
                      seen = tonumber(last)
                    else
                      seen = tonumber(found[stop])
                    end
                  end
                  redis.call('SET', KEYS[n + i], int(seen))
                end
                for j = 1, stop, 2 do
                  local m = found[j]
                  if string.sub(m, 1, 1) == '{' and string.find(m, '"wake":', 1, true) and not string.find(m, '"x":', 1, true) then
                    table.insert(out, tostring(i - 1))
                    table.insert(out, m)
                  end
                end
              end
            end
            return out
            """

    /// Tells that a waiting or sleeping task wakes soon (a `waking_soon` event, for whoever pre-warms its workspace):
    /// only while the task still waits on this very timer, only for a wait longer than the lead (a short one never
    /// idled its workspace), not for the budget's deadline (the task stops then, it does not run), not when a pause was
    /// requested (it pauses on waking), and once per wait (unless other events came after it and the mark was lost).
    /// KEYS: task, events, events_pending. ARGV: timer member, lead ms, events maxlen. Returns 1 when it told.
    static let prewarn =
        waits + """
            local t = redis.call('HMGET', KEYS[1], 'status', 'wait', 'wait_timer', 'seq', 'branch', 'step', 'pause')
            if not t[1] or (t[1] ~= 'waiting' and t[1] ~= 'sleeping') or t[3] ~= ARGV[1] or not t[2] or t[2] == '' then return 0 end
            -- A pause requested while it waits: it pauses when it wakes, and runs nothing until someone resumes it.
            if t[7] and t[7] ~= '' then return 0 end
            local w = cjson.decode(t[2])
            local now = now_ms()
            if not w.due or w.due_kind == 'deadline' or w.due <= now then return 0 end
            if w.since and w.due - w.since <= tonumber(ARGV[2]) then return 0 end
            local seq = tonumber(t[4])
            local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
            if last then
              local f = hash(last[2])
              if f.type == 'waking_soon' and tonumber(f.seq) == seq and f.branch == t[5] then return 0 end
            end
            -- The step the timer resumes (as `wake` picks it).
            local step = w.on_timeout or w.next or t[6]
            local data = cjson.encode({wake_at=iso(w.due), trigger=w.due_kind or 'time', kind=w.k, in_ms=w.due - now})
            add_event(KEYS[2], ARGV[3], 'waking_soon', seq, t[5], step, now, data)
            return 1
            """

    /// KEYS: outbox, outbox index. ARGV: id, outbox entry ids…
    static let outboxDone = """
        for i = 2, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
        if redis.call('HLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
        return 1
        """

    /// Claims due timers of every bucket in one call (an idle worker polls this every 100 ms): re-scores them
    /// `lease` ms ahead (so a crash re-fires them) and returns `bucket, member` pairs.
    /// KEYS: the timer buckets. ARGV: limit per bucket, lease ms.
    static let claimTimers =
        common + """
            local now = now_ms()
            local limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
            local out = {}
            for i = 1, #KEYS do
              local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, limit)
              for _, member in ipairs(due) do
                redis.call('ZADD', KEYS[i], now + lease, member)
                table.insert(out, tostring(i - 1))
                table.insert(out, member)
              end
            end
            return out
            """

    /// Claims tasks whose outbox is older than ARGV[1] ms. KEYS: outbox index. ARGV: older-than ms, limit, key
    /// prefix. A task whose outbox is empty by now (its entries were published and removed with a plain `HDEL`,
    /// or the task was deleted) leaves the index here, in the same script, so the index never keeps stale ids.
    static let claimOutbox =
        common + """
            local now = now_ms()
            local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
            local out = {}
            for _, id in ipairs(ids) do
              local root = string.match(id, '^[^/]+') or id
              local outbox = ARGV[3] .. '{' .. root .. '}' .. string.sub(id, #root + 1) .. ':outbox'
              if redis.call('HLEN', outbox) == 0 then
                redis.call('ZREM', KEYS[1], id)
              else
                redis.call('ZADD', KEYS[1], now, id)
                table.insert(out, id)
              end
            end
            return out
            """

    /// Raises (or sets) a task's limits in one step, checked before the first write: `{'missing'}`,
    /// `{'terminal', status}`, `{'no_limit', field}` (a relative raise of a limit that is not set), `{'still', kind,
    /// words}` (the new limits are still reached: nothing written). A `needs_review` task is resumed: its parked step
    /// goes to the outbox; a tenant's daily limit still reached (it is configuration, not the task's) answers `still`
    /// too. KEYS: task, budget, events, index prefix, outbox, outbox index.
    /// ARGV: id, actor, reason, events maxlen, outbox id, tenant limits json, tenant key prefix, then (field, `+` or `=`,
    /// integer value) triples. Answers `{'resumed', 'queued'}` or `{'raised', status}`.
    static let raise =
        common + """
            local t = redis.call('HMGET', KEYS[1], 'status', 'seq', 'branch', 'attempt', 'step', 'agent', 'queue', 'review', 'tenant')
            local status = t[1]
            if not status then return {'missing'} end
            if TERMINAL[status] then return {'terminal', status} end
            local b = hash(redis.call('HGETALL', KEYS[2]))
            local set, changes = {}, {}
            for i = 8, #ARGV, 3 do
              local field, mode, value = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
              local old = b[field]
              if old == '' then old = nil end
              local new = value
              if mode == '+' then
                if not old then return {'no_limit', field} end
                new = num(old) + value
              end
              b[field] = int(new)
              table.insert(set, field)
              table.insert(set, int(new))
              changes[field] = {from=old and tonumber(old) or cjson.null, to=new}
            end
            local now = now_ms()
            local over = reached(b, now)
            if not over and b.max_handoffs and b.max_handoffs ~= '' and num(b.handoffs) > num(b.max_handoffs) then over = 'handoffs' end
            if over then return {'still', over, cap_text(over, b)} end
            if status == 'needs_review' then
              local tkey, tl = tenant_limits(ARGV[6], ARGV[7], t[9], now)
              if tkey then
                local amount
                over, amount = tenant_reached(tkey, tl, t[9])
                if over then return {'still', 'tenant', over .. ' limit reached (' .. amount .. ')'} end
              end
            end
            redis.call('HSET', KEYS[2], unpack(set))
            local data = cjson.encode({actor=ARGV[2], reason=ARGV[3], limits=changes})
            add_event(KEYS[3], ARGV[4], 'budget_raised', tonumber(t[2]), t[3], t[5], now, data)
            if status ~= 'needs_review' then
              redis.call('HSET', KEYS[1], 'updated_at', now)
              return {'raised', status}
            end
            redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_at', now, 'status_reason', '', 'review', '')
            local task = {seq=t[2], branch=t[3], attempt=t[4], step=t[5], agent=t[6], queue=t[7]}
            redis.call('HSET', KEYS[5], ARGV[5], step_message(ARGV[1], task))
            redis.call('ZADD', KEYS[6], now, ARGV[1])
            add_event(KEYS[3], ARGV[4], 'resumed', tonumber(t[2]), t[3], t[5], now,
              cjson.encode({actor=ARGV[2], reason=ARGV[3], trigger='budget', kind=t[8]}))
            move_index(KEYS[4], ARGV[1], status, 'queued', now)
            return {'resumed', 'queued'}
            """

    /// Operator and sweep actions on one task. KEYS: task, events, index prefix, outbox, outbox index, ckpt prefix, workers,
    /// events pending (last, as in every script that appends events).
    /// ARGV: action (cancel, pause, resume, redrive, fork, reject, stalled, dead), reason, actor, events maxlen, id, outbox id,
    /// lease grace ms (stalled) / error json (dead) / new input json (redrive, optional) / from seq (fork),
    /// expected seq (dead, optional) / step (fork, optional) / worker stale ms (stalled: a holder that heartbeat within it
    /// gets it as more grace), event details json object (redrive, fork; optional).
    ///
    /// `fork` (docs/design-decisions.md): any status but `running`; the seq must name a kept checkpoint (else
    /// `{'no_checkpoint', 'kept,seqs'}`); the step resumed is ARGV[8] or the step that the newest event of that seq
    /// names (not `succeeded`, `failed`, `budget_exceeded`: those name the step that ran before), else `{'no_step'}`.
    /// Answers `{'forked', new branch, step}`.
    static let control =
        waits + """
            local t = redis.call('HMGET', KEYS[1], 'status', 'seq', 'branch', 'attempt', 'step', 'agent', 'queue', 'lease_until', 'cancel', 'pause',
              'pk', 'children_total', 'lease_owner')
            local status = t[1]
            if not status then return {'missing'} end
            local action, id = ARGV[1], ARGV[5]
            local now = now_ms()
            local task = {seq=t[2], branch=t[3], attempt=t[4], step=t[5], agent=t[6], queue=t[7]}
            local data = cjson.encode({reason=ARGV[2], actor=ARGV[3]})
            local function enqueue(new_status, etype)
              redis.call('HSET', KEYS[1], 'status', new_status, 'updated_at', now, 'lease_owner', '', 'lease_until', 0, 'pause', '', 'status_reason', '')
              redis.call('HSET', KEYS[4], ARGV[6], step_message(id, task))
              redis.call('ZADD', KEYS[5], now, id)
              add_event(KEYS[2], ARGV[4], etype, task.seq, task.branch, task.step, now, data)
              move_index(KEYS[3], id, status, new_status, now)
            end
            if action == 'cancel' then
              if TERMINAL[status] then return {'terminal', status} end
              if status == 'running' then
                redis.call('HSET', KEYS[1], 'cancel', data)
                return {'requested', status}
              end
              redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancel', data, 'finished_at', now, 'updated_at', now, 'status_reason', ARGV[2])
              add_event(KEYS[2], ARGV[4], 'cancelled', task.seq, task.branch, task.step, now, data)
              move_index(KEYS[3], id, status, 'cancelled', now)
              child_done(t[11], id, 'cancelled', '', '', now, ARGV[4])
              -- A parent's live children are cancelled with it (its join never runs).
              if num(t[12]) > 0 then cancel_children(string.sub(KEYS[1], 1, -6), id, num(t[12]), KEYS[3], data, now, ARGV[4], 0) end
              return {'cancelled', 'cancelled'}
            elseif action == 'pause' then
              if TERMINAL[status] then return {'terminal', status} end
              if status == 'paused' then return {'already', status} end
              -- A waiting or sleeping task keeps waiting; it pauses when it wakes, before the resumed step runs.
              if status == 'running' or status == 'waiting' or status == 'sleeping' then
                redis.call('HSET', KEYS[1], 'pause', data)
                return {'requested', status}
              end
              redis.call('HSET', KEYS[1], 'status', 'paused', 'paused_from', status, 'updated_at', now, 'status_reason', ARGV[2])
              add_event(KEYS[2], ARGV[4], 'paused', task.seq, task.branch, task.step, now, data)
              move_index(KEYS[3], id, status, 'paused', now)
              return {'paused', 'paused'}
            elseif action == 'resume' then
              if status == 'paused' then
                enqueue('queued', 'resumed')
                return {'resumed', 'queued'}
              end
              if t[10] and t[10] ~= '' then
                redis.call('HSET', KEYS[1], 'pause', '')
                add_event(KEYS[2], ARGV[4], 'resumed', task.seq, task.branch, task.step, now, data)
                return {'resumed', status}
              end
              return {'conflict', status}
            elseif action == 'redrive' then
              if status ~= 'dead_lettered' then return {'conflict', status} end
              -- Decoded before the first write: a bad argument fails the script with nothing written.
              local details = {}
              if ARGV[9] and ARGV[9] ~= '' then details = cjson.decode(ARGV[9]) end
              task.branch = tostring(num(t[3]) + 1)
              task.attempt = '1'
              redis.call('HSET', KEYS[1], 'branch', task.branch, 'attempt', 1, 'error', '', 'finished_at', '')
              -- A redrive with a merge-patched input (ARGV[7]); the event keeps the patch and the input before it.
              if ARGV[7] and ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'input', ARGV[7]) end
              details.reason, details.actor, details.from_seq, details.from_branch = ARGV[2], ARGV[3], tonumber(task.seq), num(t[3])
              data = cjson.encode(details)
              enqueue('queued', 'redriven')
              return {'redriven', task.branch}
            elseif action == 'fork' then
              if status == 'running' then return {'conflict', status} end
              local seq, from = num(t[2]), tonumber(ARGV[7])
              if not from or from < 0 or from > seq or redis.call('EXISTS', KEYS[6] .. from) == 0 then
                local kept = {}
                for s = seq, math.max(0, seq - 1000), -1 do
                  if redis.call('EXISTS', KEYS[6] .. s) == 1 then table.insert(kept, 1, tostring(s)) end
                end
                return {'no_checkpoint', table.concat(kept, ',')}
              end
              local step = ARGV[8]
              if not step or step == '' then
                step = nil
                -- (`waking_soon` names the step its timer would resume, not the one the task stands at.)
                local ran_before = {succeeded=true, failed=true, budget_exceeded=true, waking_soon=true}
                for _, e in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-')) do
                  local f = hash(e[2])
                  if tonumber(f.seq) == from and not ran_before[f.type] and f.step and f.step ~= '' then
                    step = f.step
                    break
                  end
                end
                if not step then return {'no_step', status} end
              end
              -- Decoded before the first write: a bad argument fails the script with nothing written.
              local details = {}
              if ARGV[9] and ARGV[9] ~= '' then details = cjson.decode(ARGV[9]) end
              -- The checkpoints after the fork point belong to the old path (its events stay in the history).
              for s = from + 1, seq do redis.call('DEL', KEYS[6] .. s) end
              task.seq, task.branch, task.step, task.attempt = tostring(from), tostring(num(t[3]) + 1), step, '1'
              redis.call('HSET', KEYS[1], 'branch', task.branch, 'seq', from, 'step', step, 'attempt', 1, 'result', '', 'error', '',
                'finished_at', '', 'cancel', '', 'paused_from', '', 'wait', '', 'wait_timer', '', 'next_timer', '', 'wakeup', '', 'claims', 0)
              details.reason, details.actor, details.from_seq, details.from_branch, details.seq_before = ARGV[2], ARGV[3], from, num(t[3]), seq
              data = cjson.encode(details)
              enqueue('queued', 'forked')
              return {'forked', task.branch, step}
            elseif action == 'reject' then
              -- A human ends a task parked at a cap: cancelled (an operator's decision, not the task's failure).
              if status ~= 'needs_review' then return {'conflict', status} end
              data = cjson.encode({reason=ARGV[2], actor=ARGV[3], action='reject'})
              redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancel', data, 'finished_at', now, 'updated_at', now,
                'status_reason', 'rejected in review: ' .. ARGV[2])
              add_event(KEYS[2], ARGV[4], 'cancelled', task.seq, task.branch, task.step, now, data)
              move_index(KEYS[3], id, status, 'cancelled', now)
              child_done(t[11], id, 'cancelled', '', '', now, ARGV[4])
              return {'cancelled', 'cancelled'}
            elseif action == 'stalled' then
              if status ~= 'running' or num(t[8]) + tonumber(ARGV[7]) > now then return {'live', status} end
              -- A holder that still heartbeats is alive but late (a stall outlived its lease): it gets ARGV[8] ms more.
              local stale = tonumber(ARGV[8]) or 0
              if stale > 0 and t[13] and t[13] ~= '' and num(t[8]) + stale > now then
                local beat = redis.call('ZSCORE', KEYS[7], t[13])
                if beat and num(beat) > now - stale then return {'live', status} end
              end
              data = cjson.encode({reason='stalled: the lease expired without a commit; republished from the checkpoint', actor=ARGV[3]})
              enqueue('queued', 'retrying')
              return {'republished', 'queued'}
            elseif action == 'dead' then
              if TERMINAL[status] then return {'terminal', status} end
              if ARGV[8] and ARGV[8] ~= '' and ARGV[8] ~= t[2] then return {'stale', status} end
              redis.call('HSET', KEYS[1], 'status', 'dead_lettered', 'error', ARGV[7], 'finished_at', now, 'updated_at', now,
                'lease_owner', '', 'lease_until', 0, 'status_reason', ARGV[2])
              add_event(KEYS[2], ARGV[4], 'dead_lettered', task.seq, task.branch, task.step, now, ARGV[7])
              move_index(KEYS[3], id, status, 'dead_lettered', now)
              child_done(t[11], id, 'dead_lettered', '', ARGV[7], now, ARGV[4])
              return {'dead_lettered', 'dead_lettered'}
            end
            return redis.error_reply('unknown action ' .. action)
            """

    /// Deletes a finished task whose retention has passed (the retention sweep, ``RedisTaskStore/purgeFinished``):
    /// succeeded, failed, cancelled or budget_exceeded, counted from `finished_at`; or dead-lettered with its dead
    /// letter discarded after it was dead-lettered, counted from the discard.
    /// KEYS: task, index prefix, events pending, webhooks due, discarded. ARGV: id, retention ms, checkpoints to delete
    /// below `seq`, where the sweep found it (a status index's status, or `discarded`).
    /// Answers `purged`, `kept` (not finished, or not long enough ago), `pending` (its outbox, events or webhooks
    /// are not out yet; a parent whose children have not all ended), `missing` (its stale entry removed) or `dropped`
    /// (found among the discarded but dead-lettered again or redriven since: removed from there).
    static let purgeFinished =
        common + """
            local PURGEABLE = {succeeded=true, failed=true, cancelled=true, budget_exceeded=true}
            local from = ARGV[4] == 'discarded' and KEYS[5] or (KEYS[2] .. ARGV[4])
            local t = redis.call('HMGET', KEYS[1], 'status', 'finished_at', 'seq', 'children_total', 'children_done', 'dead_discarded_at')
            local status = t[1]
            if not status then
              redis.call('ZREM', from, ARGV[1])
              return 'missing'
            end
            local finished, ended = tonumber(t[2] or ''), nil
            if PURGEABLE[status] then
              ended = finished
            elseif status == 'dead_lettered' and finished and tonumber(t[6] or '') and tonumber(t[6]) >= finished then
              ended = tonumber(t[6])
            end
            if not ended then
              if ARGV[4] == 'discarded' then
                redis.call('ZREM', KEYS[5], ARGV[1])
                return 'dropped'
              end
              return 'kept'
            end
            if ended > now_ms() - tonumber(ARGV[2]) then return 'kept' end
            local base = string.sub(KEYS[1], 1, -6)
            -- Nothing of it is still to go out, and no child will record its end in this task's keys.
            if num(t[4]) > num(t[5]) or redis.call('EXISTS', base .. ':outbox') == 1 or redis.call('ZSCORE', KEYS[3], ARGV[1]) or
              redis.call('ZSCORE', KEYS[4], ARGV[1]) then
              return 'pending'
            end
            local keys = {KEYS[1], base .. ':budget', base .. ':events', base .. ':effects', base .. ':effects_charged',
              base .. ':signals', base .. ':signals_seen', base .. ':children'}
            local seq = num(t[3])
            for s = math.max(0, seq - tonumber(ARGV[3])), seq do table.insert(keys, base .. ':ckpt:' .. s) end
            redis.call('UNLINK', unpack(keys))
            redis.call('ZREM', KEYS[2] .. status, ARGV[1])
            redis.call('ZREM', KEYS[5], ARGV[1])
            return 'purged'
            """

    /// Reads what the event relay publishes next for one task. KEYS: task, events, budget. ARGV: max entries.
    /// Answers `{cursor, agent, status, notify, progress fraction, progress message, cost, tokens, entries, trimmed}`:
    /// `trimmed` is the number of events the stream cap (`MAXLEN ~`) removed before the relay published them
    /// (XINFO's `entries-added` minus those published or counted as trimmed and those still to publish), else 0.
    static let eventsRead = """
        local t = redis.call('HMGET', KEYS[1], 'events_cursor', 'agent', 'status', 'notify', 'progress_fraction', 'progress_message',
          'events_published')
        local b = redis.call('HMGET', KEYS[3], 'cost', 'tokens')
        local cursor = t[1] or ''
        local start = '-'
        if cursor ~= '' then start = '(' .. cursor end
        local entries = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', tonumber(ARGV[1]))
        -- Trimming removes from the head: only when the oldest entry left is past the cursor can events the relay
        -- never published be gone, and then every entry left is unpublished.
        local trimmed = 0
        local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
        local function parts(id)
          local ms, n = string.match(id, '^(%d+)-(%d+)$')
          return tonumber(ms or '0'), tonumber(n or '0')
        end
        local fms, fn = parts(first and first[1] or '0-0')
        local cms, cn = parts(cursor ~= '' and cursor or '0-0')
        if first and (fms > cms or (fms == cms and fn > cn)) then
          local info = redis.call('XINFO', 'STREAM', KEYS[2])
          local added = 0
          for i = 1, #info, 2 do
            if info[i] == 'entries-added' then added = tonumber(info[i + 1]) end
          end
          trimmed = math.max(0, added - tonumber(t[7] or '0') - redis.call('XLEN', KEYS[2]))
        end
        return {cursor, t[2] or '', t[3] or '', t[4] or '', t[5] or '', t[6] or '', b[1] or '', b[2] or '', entries, trimmed}
        """

    /// The end of the cursor scripts (relay and webhook): keeps task ARGV[1] in the zset KEYS[3], scored `now`,
    /// while the stream KEYS[2] has entries after the new cursor ARGV[3] (`more`), else removes it (`done`).
    static let cursorTail = """
        local start = '-'
        if ARGV[3] ~= '' then start = '(' .. ARGV[3] end
        if #redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', 1) == 0 then
          redis.call('ZREM', KEYS[3], ARGV[1])
          return 'done'
        end
        redis.call('ZADD', KEYS[3], now, ARGV[1])
        return 'more'
        """

    /// Advances the relay's cursor after a confirmed publish: a compare-and-set (another relay that moved it first
    /// wins; nothing is written then). Marks the task for webhook delivery, and keeps it in `events_pending` while
    /// newer events wait (else removes it). KEYS: task, events, events pending, webhooks due.
    /// ARGV: id, expected cursor, new cursor, events published or counted as trimmed, webhook (`1`: mark it).
    static let eventsAdvance = """
        local t = redis.call('HMGET', KEYS[1], 'events_cursor', 'status')
        if (t[1] or '') ~= ARGV[2] then return 'moved' end
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        if not t[2] then
          redis.call('ZREM', KEYS[3], ARGV[1])
          return 'missing'
        end
        if ARGV[3] ~= ARGV[2] then
          redis.call('HSET', KEYS[1], 'events_cursor', ARGV[3])
          redis.call('HINCRBY', KEYS[1], 'events_published', tonumber(ARGV[4]))
        end
        if ARGV[5] == '1' then redis.call('ZADD', KEYS[4], 'NX', now, ARGV[1]) end
        """ + "\n" + cursorTail

    /// Claims at most ARGV[1] due members over all the buckets in KEYS (from bucket ARGV[3], wrapping, so no
    /// bucket starves), re-scored ARGV[2] ms ahead (a crash hands them back); returns the members.
    static let claimDue = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local left, lease, first = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
        local out = {}
        for n = 0, #KEYS - 1 do
          if left <= 0 then break end
          local key = KEYS[(first + n) % #KEYS + 1]
          for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, left)) do
            redis.call('ZADD', key, now + lease, member)
            table.insert(out, member)
            left = left - 1
          end
        end
        return out
        """

    /// Reads the next events a task's webhook gets. KEYS: task, events, budget. ARGV: max entries.
    /// Answers `{cursor, agent, status, notify, progress fraction, progress message, cost, tokens, entries,
    /// attempts, disabled}`.
    static let webhookRead = """
        local t = redis.call('HMGET', KEYS[1], 'wh_cursor', 'agent', 'status', 'notify', 'progress_fraction', 'progress_message',
          'wh_attempts', 'wh_disabled')
        local b = redis.call('HMGET', KEYS[3], 'cost', 'tokens')
        local start = '-'
        if t[1] and t[1] ~= '' then start = '(' .. t[1] end
        local entries = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', tonumber(ARGV[1]))
        return {t[1] or '', t[2] or '', t[3] or '', t[4] or '', t[5] or '', t[6] or '', b[1] or '', b[2] or '', entries,
          t[7] or '0', t[8] or ''}
        """

    /// Records the outcome of a webhook round for one task: a compare-and-set on its webhook cursor (nothing is
    /// written when another worker moved it). KEYS: task, events, webhooks due. ARGV: id, expected cursor, new
    /// cursor, outcome (`ok`, `retry`, `gone`: disabled), error text, retry delay ms, attempts, delivered count.
    static let webhookAdvance = """
        local t = redis.call('HMGET', KEYS[1], 'wh_cursor', 'status')
        if (t[1] or '') ~= ARGV[2] then return 'moved' end
        if not t[2] then
          redis.call('ZREM', KEYS[3], ARGV[1])
          return 'missing'
        end
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        local outcome = ARGV[4]
        if ARGV[3] ~= ARGV[2] then redis.call('HSET', KEYS[1], 'wh_cursor', ARGV[3]) end
        if tonumber(ARGV[8]) > 0 then redis.call('HINCRBY', KEYS[1], 'wh_delivered', tonumber(ARGV[8])) end
        if outcome == 'retry' then
          redis.call('HSET', KEYS[1], 'wh_attempts', ARGV[7], 'wh_error', ARGV[5], 'wh_next', now + tonumber(ARGV[6]), 'wh_failing', '1')
          redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[1])
          return 'retry'
        end
        if outcome == 'gone' then
          redis.call('HSET', KEYS[1], 'wh_disabled', ARGV[5], 'wh_error', ARGV[5], 'wh_failing', '', 'wh_next', '')
          redis.call('ZREM', KEYS[3], ARGV[1])
          return 'gone'
        end
        redis.call('HSET', KEYS[1], 'wh_attempts', 0, 'wh_next', '', 'wh_failing', '')
        """ + "\n" + cursorTail
}
