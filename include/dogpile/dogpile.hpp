// SPDX-License-Identifier: MIT
// dogpile/dogpile.hpp — everything in one include.
//
//   #include <dogpile/dogpile.hpp>
//
//   dogpile::Dogpile<> lock(std::chrono::minutes(5));
//   lock.acquire([&] { rebuild(); });
#pragma once

#include "dogpile/backend.hpp"
#include "dogpile/cached.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/codec.hpp"
#include "dogpile/config.hpp"
#include "dogpile/errors.hpp"
#include "dogpile/executor.hpp"
#include "dogpile/file_lock.hpp"
#include "dogpile/lock.hpp"
#include "dogpile/memcached.hpp"
#include "dogpile/memcached_meta.hpp"
#include "dogpile/memory.hpp"
#include "dogpile/metrics.hpp"
#include "dogpile/name_registry.hpp"
#include "dogpile/options.hpp"
#include "dogpile/outcome.hpp"
#include "dogpile/region.hpp"
#include "dogpile/stats.hpp"
#include "dogpile/sync_reader.hpp"
#include "dogpile/version.hpp"
