/*
 * channel.c - see channel.h.
 */
#include "channel.h"

#include <stdlib.h>
#include <string.h>

void ec2_snapshot_set_free(struct ec2_snapshot_set *s)
{
	if (!s)
		return;
	free(s->items);
	s->items = NULL;
	s->n = 0;
}

bool ec2_error_is_retryable(const struct amis_err *err)
{
	static const char *const retryable[] = {
	    "RequestLimitExceeded",
	    "SnapshotCreationPerVolumeRateExceeded",
	    "ConcurrentSnapshotLimitExceeded",
	    "InternalError",
	    "InternalFailure",
	    "ServiceUnavailable",
	    "Unavailable",
	    "Throttling",
	    "Timeout",
	    "ConnectionError",
	};
	size_t i;

	if (!err)
		return false;
	for (i = 0; i < sizeof(retryable) / sizeof(retryable[0]); i++) {
		if (strcmp(err->code, retryable[i]) == 0)
			return true;
	}
	return strncmp(err->code, "HttpError5", 10) == 0;
}
