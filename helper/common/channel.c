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

int channel_opt_str(const struct amsp_msgview *m, enum amsp_tag tag, char *buf, size_t sz)
{
	buf[0] = '\0';
	if (amsp_get(m, tag) && amsp_copy_str(amsp_get(m, tag), buf, sz) != 0) {
		buf[0] = '\0';
		return -1;
	}
	return 0;
}

void channel_put_image(struct amsp_writer *aw, const struct ec2_image_info *img)
{
	size_t i;

	amsp_put_str_if(aw, AMSP_T_ARCHITECTURE, img->architecture);
	amsp_put_str_if(aw, AMSP_T_VIRT_TYPE, img->virtualization_type);
	amsp_put_u8(aw, AMSP_T_ENA, img->ena_support);
	amsp_put_str_if(aw, AMSP_T_BOOT_MODE, img->boot_mode);
	amsp_put_str_if(aw, AMSP_T_SRIOV, img->sriov_net_support);
	amsp_put_str_if(aw, AMSP_T_TPM, img->tpm_support);
	amsp_put_str_if(aw, AMSP_T_IMDS_SUPPORT, img->imds_support);
	amsp_put_str_if(aw, AMSP_T_ROOT_DEVICE, img->root_device_name);
	for (i = 0; i < img->nmappings; i++) {
		const struct ec2_volume_info *v = &img->mappings[i];

		amsp_put_str(aw, AMSP_T_DEVICE_NAME, v->device_name);
		amsp_put_str(aw, AMSP_T_SNAPSHOT_ID, v->snapshot_id);
		amsp_put_str(aw, AMSP_T_VOLUME_TYPE, v->volume_type);
		amsp_put_u32(aw, AMSP_T_VOLUME_SIZE, amsp_u32_of(v->size_gib));
		amsp_put_u32(aw, AMSP_T_IOPS, amsp_u32_of(v->iops));
		amsp_put_u32(aw, AMSP_T_THROUGHPUT, amsp_u32_of(v->throughput));
		amsp_put_u8(aw, AMSP_T_DELETE_ON_TERM, v->delete_on_termination);
	}
}

int channel_get_image(const struct amsp_msgview *m, struct ec2_image_info *img)
{
	size_t n = amsp_count(m, AMSP_T_DEVICE_NAME), i;

	/* Informational attributes: absent or too long is "". */
	channel_opt_str(m, AMSP_T_ARCHITECTURE, img->architecture, sizeof(img->architecture));
	channel_opt_str(m, AMSP_T_VIRT_TYPE, img->virtualization_type,
	                sizeof(img->virtualization_type));
	channel_opt_str(m, AMSP_T_BOOT_MODE, img->boot_mode, sizeof(img->boot_mode));
	channel_opt_str(m, AMSP_T_SRIOV, img->sriov_net_support, sizeof(img->sriov_net_support));
	channel_opt_str(m, AMSP_T_TPM, img->tpm_support, sizeof(img->tpm_support));
	channel_opt_str(m, AMSP_T_IMDS_SUPPORT, img->imds_support, sizeof(img->imds_support));
	channel_opt_str(m, AMSP_T_ROOT_DEVICE, img->root_device_name,
	                sizeof(img->root_device_name));
	img->ena_support = amsp_get(m, AMSP_T_ENA) && amsp_u8(amsp_get(m, AMSP_T_ENA));
	img->nmappings = 0;
	if (n > EC2_MAX_INSTANCE_VOLUMES || amsp_count(m, AMSP_T_SNAPSHOT_ID) != n ||
	    amsp_count(m, AMSP_T_VOLUME_TYPE) != n || amsp_count(m, AMSP_T_VOLUME_SIZE) != n ||
	    amsp_count(m, AMSP_T_IOPS) != n || amsp_count(m, AMSP_T_THROUGHPUT) != n ||
	    amsp_count(m, AMSP_T_DELETE_ON_TERM) != n)
		return -1;
	for (i = 0; i < n; i++) {
		struct ec2_volume_info *v = &img->mappings[i];

		if (amsp_copy_str(amsp_get_nth(m, AMSP_T_DEVICE_NAME, i), v->device_name,
		                  sizeof(v->device_name)) != 0 ||
		    amsp_copy_str(amsp_get_nth(m, AMSP_T_SNAPSHOT_ID, i), v->snapshot_id,
		                  sizeof(v->snapshot_id)) != 0 ||
		    (v->snapshot_id[0] && !aws_resource_id_valid(v->snapshot_id, "snap")) ||
		    amsp_copy_str(amsp_get_nth(m, AMSP_T_VOLUME_TYPE, i), v->volume_type,
		                  sizeof(v->volume_type)) != 0)
			return -1;
		v->size_gib = (long)amsp_u32(amsp_get_nth(m, AMSP_T_VOLUME_SIZE, i));
		v->iops = (long)amsp_u32(amsp_get_nth(m, AMSP_T_IOPS, i));
		v->throughput = (long)amsp_u32(amsp_get_nth(m, AMSP_T_THROUGHPUT, i));
		v->delete_on_termination = amsp_u8(amsp_get_nth(m, AMSP_T_DELETE_ON_TERM, i)) != 0;
	}
	img->nmappings = n;
	return 0;
}
