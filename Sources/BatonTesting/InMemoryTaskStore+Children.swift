import Baton
import Foundation

extension InMemoryTaskStore {
    /// Records a child's end in its parent, once per child, as the scripts' `child_done`: the last child to end
    /// wakes the parent's join step. Call with the child's record as stored after its terminal transition.
    func childDone(_ storage: inout Storage, _ child: Record, now: Int64) {
        guard !child.parent.isEmpty, var parent = storage.tasks[child.parent], parent.children[child.id] == nil else { return }
        let result = child.status == "succeeded" && !child.result.isEmpty ? child.result : "null"
        let error = child.status != "succeeded" && !child.error.isEmpty ? child.error : "null"
        let status = JSONValue.string(child.status).jsonString
        parent.children[child.id] =
            result.utf8.count + error.utf8.count > ChildLimits.resultMaxBytes
            ? "{\"status\":\(status),\"result\":null,\"error\":null,\"truncated\":true}"
            : "{\"status\":\(status),\"result\":\(result),\"error\":\(error)}"
        parent.childrenDone += 1
        if parent.status == "waiting", let wait = parent.wait, wait.kind == "children", parent.childrenDone >= parent.childrenTotal {
            _ = wake(&storage, &parent, wait: wait, trigger: ["trigger": "children", "total": .int(parent.childrenTotal)], now: now)
        }
        storage.tasks[child.parent] = parent
    }

    /// Cancels the live children (and theirs) of `id`, as the scripts' `cancel_children`.
    func cancelChildren(_ storage: inout Storage, of id: String, total: Int64, data: String, now: Int64, depth: Int = 0) {
        guard total > 0 else { return }
        for n in 1...total {
            let childID = "\(id)/\(n)"
            guard var c = storage.tasks[childID], !Self.terminal.contains(c.status) else { continue }
            c.cancel = data
            if c.status != "running" {
                c.status = "cancelled"
                c.finishedAt = now
                c.updatedAt = now
                c.statusReason = "the parent task was cancelled"
                c.wait = nil
                c.waitTimer = ""
                c.nextTimer = nil
                addEvent(&storage, &c, "cancelled", seq: c.seq, branch: c.branch, step: c.step, now: now, data: data)
                storage.tasks[childID] = c
                childDone(&storage, c, now: now)
                if depth < TaskID.maxChildDepth {
                    cancelChildren(&storage, of: childID, total: c.childrenTotal, data: data, now: now, depth: depth + 1)
                }
            } else {
                storage.tasks[childID] = c
            }
        }
    }

    /// Creates the children of a `parallel` commit (their first step messages go to the parent's outbox).
    func createChildren(_ storage: inout Storage, _ parent: inout Record, _ spec: ParallelSpec, now: Int64) {
        let before = parent.childrenTotal
        for (offset, child) in spec.children.enumerated() {
            let id = "\(parent.id)/\(before + Int64(offset) + 1)"
            var record = Record(
                id: id, agent: child.agent, input: child.inputJSON, status: "queued", step: child.firstStep, createdAt: now, updatedAt: now,
                tenant: parent.tenant, labels: "{}", notify: "{}", queue: child.queue, root: parent.root, parent: parent.id,
                limits: child.limits)
            record.up = [parent.id] + parent.up
            record.checkpoints[0] = child.stateJSON
            addEvent(
                &storage, &record, "submitted", seq: 0, branch: 0, step: child.firstStep, now: now,
                data: JSONValue.object(["parent": .string(parent.id)]).jsonString)
            storage.tasks[id] = record
            parent.outbox["child-" + id] = .step(
                StepMessage(task: id, agent: child.agent, step: child.firstStep, seq: 0, branch: 0, attempt: 1), queue: child.queue)
        }
        parent.childrenTotal = before + Int64(spec.children.count)
    }

    /// Adds a child's committed deltas to its ancestors' counters; the limit an ancestor then reached, if any.
    func chargeAncestors(_ storage: inout Storage, _ r: Record, charge: Charge, steps: Int64, now: Int64) -> String? {
        guard !r.up.isEmpty else { return nil }
        for ancestor in r.up {
            storage.tasks[ancestor]?.usage.costMicros += charge.costMicros
            storage.tasks[ancestor]?.usage.tokens += charge.tokens
            storage.tasks[ancestor]?.usage.toolCalls += charge.toolCalls
            storage.tasks[ancestor]?.usage.steps += steps
        }
        return reachedUp(storage, r, now: now)
    }

    /// The limit an ancestor of `r` has reached, if any.
    func reachedUp(_ storage: Storage, _ r: Record, now: Int64) -> String? {
        for ancestor in r.up {
            if let a = storage.tasks[ancestor], let over = Self.reached(a, now: now) { return over }
        }
        return nil
    }

    public func childResults(task: String) async throws -> [String: String] {
        state.withLock { $0.tasks[task]?.children ?? [:] }
    }
}
