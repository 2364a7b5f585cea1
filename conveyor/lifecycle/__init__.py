"""What happens to a task, decided without I/O.

The worker (worker/runtime.py) does the I/O; it asks these functions what to do at each
step and does exactly that. Nothing here reads a clock, a random source or a store: time,
jitter and what the store answered come in as arguments, so every branch is a table test
(tests/worker/test_lifecycle.py, tests/notify/test_lifecycle.py).

- ``messages``: what a delivered message means (claim it, hide it, resend it, ...);
- ``attempts``: what an attempt came to, and what to record;
- ``webhooks``: a completion webhook's delivery and retries;
- ``flow``: fleet-wide limits -- the rate limit's GCRA arithmetic, how long a task over
  its concurrency limit waits, what a task holding a rate reservation does.
"""

from conveyor.lifecycle.attempts import (
    ERROR_TEXT_CHARS as ERROR_TEXT_CHARS,
)
from conveyor.lifecycle.attempts import (
    RESULT_REFUSED as RESULT_REFUSED,
)
from conveyor.lifecycle.attempts import (
    Finish as Finish,
)
from conveyor.lifecycle.attempts import (
    Outcome as Outcome,
)
from conveyor.lifecycle.attempts import (
    Requeue as Requeue,
)
from conveyor.lifecycle.attempts import (
    backoff_ceiling as backoff_ceiling,
)
from conveyor.lifecycle.attempts import (
    backoff_seconds as backoff_seconds,
)
from conveyor.lifecycle.attempts import (
    handler_missing as handler_missing,
)
from conveyor.lifecycle.attempts import (
    on_outcome as on_outcome,
)
from conveyor.lifecycle.attempts import (
    outcome_of as outcome_of,
)
from conveyor.lifecycle.messages import (
    Action as Action,
)
from conveyor.lifecycle.messages import (
    CheckOwner as CheckOwner,
)
from conveyor.lifecycle.messages import (
    Claim as Claim,
)
from conveyor.lifecycle.messages import (
    Delete as Delete,
)
from conveyor.lifecycle.messages import (
    Deliver as Deliver,
)
from conveyor.lifecycle.messages import (
    Fail as Fail,
)
from conveyor.lifecycle.messages import (
    Hide as Hide,
)
from conveyor.lifecycle.messages import (
    Park as Park,
)
from conveyor.lifecycle.messages import (
    Resend as Resend,
)
from conveyor.lifecycle.messages import (
    Run as Run,
)
from conveyor.lifecycle.messages import (
    SendNotify as SendNotify,
)
from conveyor.lifecycle.messages import (
    TakeOver as TakeOver,
)
from conveyor.lifecycle.messages import (
    after_take_over as after_take_over,
)
from conveyor.lifecycle.messages import (
    claim_copy as claim_copy,
)
from conveyor.lifecycle.messages import (
    finished as finished,
)
from conveyor.lifecycle.messages import (
    hide_until as hide_until,
)
from conveyor.lifecycle.messages import (
    on_claim_refused as on_claim_refused,
)
from conveyor.lifecycle.messages import (
    on_delivery as on_delivery,
)
from conveyor.lifecycle.messages import (
    on_owner as on_owner,
)
from conveyor.lifecycle.messages import (
    on_parked as on_parked,
)
from conveyor.lifecycle.messages import (
    standby as standby,
)
from conveyor.lifecycle.webhooks import (
    NOTIFY_ATTEMPTS as NOTIFY_ATTEMPTS,
)
from conveyor.lifecycle.webhooks import (
    NOTIFY_BACKOFF_SECONDS as NOTIFY_BACKOFF_SECONDS,
)
from conveyor.lifecycle.webhooks import (
    AfterDelivery as AfterDelivery,
)
from conveyor.lifecycle.webhooks import (
    after_delivery as after_delivery,
)
from conveyor.lifecycle.webhooks import (
    delivery_attempt as delivery_attempt,
)
from conveyor.lifecycle.webhooks import (
    on_notify as on_notify,
)
