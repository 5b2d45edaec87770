// CacheRegion's operations on many keys at once.
#include <fmt/format.h>

#include <algorithm>

#include "dogpile/detail/keys.hpp"
#include "region_state.hpp"

namespace dogpile {
namespace {

using detail::Found;
using detail::LockKeeper;
using Lead = detail::FlightTable::Lead;
using SteadyClock = std::chrono::steady_clock;

}  // namespace

void CacheRegion::get_multi_bytes(std::span<const std::string_view> user_keys, DecodeAt decode) {
  State& s = *state_;
  s.check_invalidations(s.clock->now());
  std::vector<std::string> keys;
  keys.reserve(user_keys.size());
  for (auto k : user_keys) keys.push_back(detail::map_key(s.options.key_prefix, k));
  std::vector<std::string_view> views(keys.begin(), keys.end());
  std::vector<std::optional<Item>> items;
  try {
    items = s.backend->get_multi(views);
  } catch (const std::exception& e) {
    s.report(ErrorKind::backend, "get_multi",
             user_keys.empty() ? std::string_view() : user_keys.front(), e.what());
    return;
  }
  for (std::size_t i = 0; i < items.size() && i < user_keys.size(); ++i) {
    bool fresh = false;
    if (items[i]) {
      const Found found = s.examine(
          *items[i], user_keys[i], [&](std::string_view payload) { return decode(i, payload); },
          s.options.expiration);
      fresh = found == Found::fresh || found == Found::early;
    }
    State::count(fresh ? s.counters.hits : s.counters.misses);
  }
}

bool CacheRegion::set_multi_bytes(std::span<const std::string_view> user_keys, EncodeAt encode) {
  State& s = *state_;
  std::vector<std::string> keys;
  std::vector<std::shared_ptr<Item>> items;
  std::vector<KeyedItem> batch;
  bool ok = true;
  for (std::size_t i = 0; i < user_keys.size(); ++i) {
    auto item = s.build_item(
        user_keys[i], [&](std::string& out) { encode(i, out); }, std::chrono::microseconds(0));
    if (!item) {
      ok = false;
      continue;
    }
    keys.push_back(detail::map_key(s.options.key_prefix, user_keys[i]));
    items.push_back(std::move(item));
  }
  for (std::size_t i = 0; i < keys.size(); ++i) batch.push_back(KeyedItem{keys[i], items[i].get()});
  if (batch.empty()) return ok;
  try {
    s.backend->set_multi(batch, s.ttl_for(s.options.expiration));
  } catch (const std::exception& e) {
    s.report(ErrorKind::backend, "set_multi", user_keys.front(), e.what());
    return false;
  }
  return ok;
}

bool CacheRegion::remove_multi_bytes(std::span<const std::string_view> user_keys) {
  State& s = *state_;
  std::vector<std::string> keys;
  keys.reserve(user_keys.size());
  for (auto k : user_keys) keys.push_back(detail::map_key(s.options.key_prefix, k));
  std::vector<std::string_view> views(keys.begin(), keys.end());
  if (views.empty()) return true;
  try {
    s.backend->remove_multi(views);
    return true;
  } catch (const std::exception& e) {
    s.report(ErrorKind::backend, "remove_multi", user_keys.front(), e.what());
    return false;
  }
}

// get_or_create for many keys. The shape of get_or_create_bytes, batched:
//   1. one multi-get for every distinct key;
//   2. in sorted key order, each key that is not fresh joins its flight and,
//      if it leads, tries its lock once: won -> "own"; held elsewhere ->
//      serve stale, or "remote" when there is no value; followers "follow";
//   3. owned keys are re-read (one multi-get), then created by one creator
//      call, stored, unlocked and published;
//   4. remote keys are polled (one multi-get per poll) until their values
//      appear or their locks free up (then created as in 3);
//   5. followed keys are waited for.
// Every lead is completed before any follower waits, so two multi calls with
// overlapping keys cannot wait on each other.
void CacheRegion::get_or_create_multi_bytes(std::span<const std::string_view> user_keys,
                                            DecodeAt decode, CreateAt create, EncodeAt encode) {
  State& s = *state_;
  const std::size_t n = user_keys.size();
  if (n == 0) return;
  s.check_invalidations(s.clock->now());

  enum class Task { done, own, remote, follow };
  struct Group {
    std::string key;
    std::size_t first = 0;            // the index whose slot receives the value
    std::vector<std::size_t> copies;  // other indices with the same key
    Found found = Found::missing;
    std::shared_ptr<Item> item;
    std::optional<Lead> lead;
    std::shared_ptr<detail::Flight> follow;
    std::unique_ptr<DistributedLock> lock;
    bool locked = false;
    Task task = Task::done;
  };

  std::vector<std::string> mapped;
  mapped.reserve(n);
  for (auto k : user_keys) mapped.push_back(detail::map_key(s.options.key_prefix, k));
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return mapped[a] < mapped[b]; });
  std::vector<Group> groups;
  for (auto i : order) {
    if (!groups.empty() && groups.back().key == mapped[i]) {
      groups.back().copies.push_back(i);
    } else {
      Group& g = groups.emplace_back();
      g.key = std::move(mapped[i]);
      g.first = i;
    }
  }
  auto user_key = [&](const Group& g) { return user_keys[g.first]; };
  auto decoder = [&](const Group& g) {
    return [&decode, i = g.first](std::string_view payload) { return decode(i, payload); };
  };
  // One multi-get for `batch`; nullopt (reported) if the backend failed.
  auto fetch =
      [&](const std::vector<Group*>& batch) -> std::optional<std::vector<std::optional<Item>>> {
    std::vector<std::string_view> views;
    views.reserve(batch.size());
    for (Group* g : batch) views.push_back(g->key);
    try {
      auto items = s.backend->get_multi(views);
      items.resize(batch.size());
      return items;
    } catch (const std::exception& e) {
      s.report(ErrorKind::backend, "get_multi", user_key(*batch.front()), e.what());
      return std::nullopt;
    }
  };
  // Completes `g`'s flight with a value that someone else stored.
  auto found_elsewhere = [&](Group& g, Found found, std::shared_ptr<Item> item) {
    if (g.locked) s.release(*g.lock, user_key(g));
    g.lead->publish(std::move(item));
    g.task = Task::done;
    if (found == Found::fresh) {
      State::count(g.found == Found::stale ? s.counters.hits : s.counters.waited);
    } else {
      State::count(s.counters.stale_served);
    }
  };

  // 1.
  std::vector<Group*> all;
  for (auto& g : groups) all.push_back(&g);
  auto items = fetch(all);
  bool degraded = !items;
  for (std::size_t j = 0; j < groups.size(); ++j) {
    Group& g = groups[j];
    if (degraded) {
      g.found = Found::error;
    } else if ((*items)[j]) {
      g.found = s.examine(*(*items)[j], user_key(g), decoder(g), s.options.expiration);
      if (g.found == Found::early) g.found = Found::fresh;  // no early recomputation here
      if (g.found != Found::missing) g.item = std::make_shared<Item>(std::move(*(*items)[j]));
    }
  }

  // 2.
  for (auto& g : groups) {
    if (g.found == Found::fresh) {
      State::count(s.counters.hits);
      continue;
    }
    if (g.found == Found::stale) {
      if (auto lead = s.flights.try_lead(g.key)) g.lead.emplace(std::move(*lead));
      if (!g.lead) {
        State::count(s.counters.stale_served);
        continue;
      }
    } else {
      State::count(s.counters.misses);
      auto [flight, lead] = s.flights.join(g.key);
      if (!lead) {
        g.follow = std::move(flight);
        g.task = Task::follow;
        State::count(s.counters.lock_waits);
        continue;
      }
      g.lead.emplace(std::move(*lead));
    }
    g.task = Task::own;
    if (degraded) continue;
    g.lock = s.make_lock(g.key);
    const auto taken = s.try_lock(*g.lock, user_key(g));
    if (!taken) {
      degraded = true;
    } else if (*taken) {
      g.locked = true;
    } else if (g.found == Found::stale) {
      g.lead->publish(std::move(g.item));
      g.task = Task::done;
      State::count(s.counters.stale_served);
    } else {
      g.task = Task::remote;
      State::count(s.counters.lock_waits);
    }
  }

  // 3.
  auto create_owned = [&](std::vector<Group*> own) {
    std::vector<Group*> locked;
    for (Group* g : own) {
      if (g->locked) locked.push_back(g);
    }
    if (!locked.empty()) {
      if (auto again = fetch(locked)) {
        for (std::size_t j = 0; j < locked.size(); ++j) {
          Group& g = *locked[j];
          if (!(*again)[j]) continue;
          const Found found =
              s.examine(*(*again)[j], user_key(g), decoder(g), s.options.expiration, true);
          if (found == Found::fresh || found == Found::early) {
            found_elsewhere(g, Found::fresh, std::make_shared<Item>(std::move(*(*again)[j])));
          }
        }
      }
      std::erase_if(own, [](Group* g) { return g->task == Task::done; });
    }
    if (own.empty()) return;
    std::vector<std::size_t> indices;
    std::vector<LockKeeper::Ticket> tickets;
    for (Group* g : own) {
      indices.push_back(g->first);
      if (g->locked) tickets.push_back(s.keep_alive(g->lock.get(), user_key(*g)));
    }
    const auto started = SteadyClock::now();
    try {
      create(indices);
    } catch (...) {
      tickets.clear();
      const auto error = std::current_exception();
      for (Group* g : own) {
        if (g->locked) s.release(*g->lock, user_key(*g));
        g->lead->fail(error);
        g->task = Task::done;
      }
      State::count(s.counters.creation_errors);
      throw;
    }
    tickets.clear();
    const auto took =
        std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - started);
    std::vector<std::shared_ptr<Item>> built;
    std::vector<KeyedItem> batch;
    for (Group* g : own) {
      built.push_back(s.build_item(
          user_key(*g), [&](std::string& out) { encode(g->first, out); }, took));
      if (built.back()) batch.push_back(KeyedItem{g->key, built.back().get()});
    }
    if (!batch.empty()) {
      try {
        s.backend->set_multi(batch, s.ttl_for(s.options.expiration));
      } catch (const std::exception& e) {
        s.report(ErrorKind::backend, "set_multi", user_key(*own.front()), e.what());
      }
    }
    for (std::size_t j = 0; j < own.size(); ++j) {
      Group& g = *own[j];
      if (g.locked) s.release(*g.lock, user_key(g));
      State::count(s.counters.created);
      if (!g.locked) State::count(s.counters.degraded);
      if (built[j]) g.lead->publish(std::move(built[j]));
      g.lead.reset();  // abandoned if it could not be built: followers retry
      g.task = Task::done;
    }
  };
  std::vector<Group*> own, remote;
  for (auto& g : groups) {
    if (g.task == Task::own) own.push_back(&g);
    if (g.task == Task::remote) remote.push_back(&g);
  }
  create_owned(std::move(own));

  // 4.
  const auto waiting_since = SteadyClock::now();
  Duration pause = s.options.wait.first_poll;
  while (!remote.empty()) {
    s.wait_before_poll(pause);
    auto polled = fetch(remote);
    if (!polled) {
      create_owned(std::move(remote));
      break;
    }
    const bool out_of_time =
        s.options.wait.max_wait && SteadyClock::now() - waiting_since >= *s.options.wait.max_wait;
    std::vector<Group*> still, ready;
    for (std::size_t j = 0; j < remote.size(); ++j) {
      Group& g = *remote[j];
      if ((*polled)[j]) {
        Found found = s.examine(*(*polled)[j], user_key(g), decoder(g), s.options.expiration, true);
        if (found == Found::early) found = Found::fresh;
        if (found != Found::missing) {
          found_elsewhere(g, found, std::make_shared<Item>(std::move(*(*polled)[j])));
          continue;
        }
      }
      const auto taken = s.try_lock(*g.lock, user_key(g));
      if (taken && *taken) g.locked = true;
      if (!taken || *taken) {
        ready.push_back(&g);
      } else if (out_of_time) {
        s.report(ErrorKind::lock, "wait", user_key(g),
                 "gave up waiting for the lock holder; creating here");
        ready.push_back(&g);
      } else {
        still.push_back(&g);
      }
    }
    create_owned(std::move(ready));
    remote = std::move(still);
  }

  // 5.
  for (auto& g : groups) {
    if (g.task != Task::follow) continue;
    const auto result = g.follow->wait();
    if (result.error) std::rethrow_exception(result.error);
    if (result.item) {
      const Found found = s.examine(*result.item, user_key(g), decoder(g), s.options.expiration);
      if (found != Found::missing) {
        State::count(found == Found::stale ? s.counters.stale_served : s.counters.waited);
        continue;
      }
    }
    // The leader gave up: this key alone, the single-key way.
    get_or_create_bytes(
        user_key(g), decoder(g),
        [&](std::string& out) {
          const std::size_t only[] = {g.first};
          create(only);
          encode(g.first, out);
          return true;
        },
        detail::CallParams{});
  }

  // Keys given more than once share their first index's value.
  for (auto& g : groups) {
    if (g.copies.empty()) continue;
    std::string bytes;
    encode(g.first, bytes);
    for (auto c : g.copies) decode(c, bytes);
  }
}

}  // namespace dogpile
