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
