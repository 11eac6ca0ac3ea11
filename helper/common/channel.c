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
	return (err_flags(err) & AMIS_F_RETRY) != 0;
}

long retry_backoff_ms(long base_ms, int next, const struct amis_err *err)
{
	long d = base_ms;
	int k;

	for (k = 2; k < next && d < RETRY_BACKOFF_CAP_MS; k++)
		d *= 2;
	if (d > RETRY_BACKOFF_CAP_MS)
		d = RETRY_BACKOFF_CAP_MS;
	d = d / 2 + (d > 1 ? random() % (d / 2 + 1) : 0);
	if (err_is(err, AMIS_E_SNAPSHOT_RATE_EXCEEDED) && d < PER_VOLUME_RATE_BACKOFF_MS)
		d = PER_VOLUME_RATE_BACKOFF_MS;
	return d;
}
