#!/usr/bin/perl
# An independent DKIM verifier for the signing tests: Perl's Mail::DKIM (Debian libmail-dkim-perl;
# Ed25519 through CryptX, libcryptx-perl), asking the DNS server given on the command line.
# Usage: dkim_verify.pl DNS_HOST DNS_PORT < message
# Prints one line per signature: "result<TAB>domain<TAB>selector<TAB>algorithm<TAB>detail", then
# "overall<TAB>result<TAB>detail".
use strict;
use warnings;
use Mail::DKIM 1.20;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;

my ($host, $port) = @ARGV;
die "usage: $0 DNS_HOST DNS_PORT < message\n" unless defined $port;
Mail::DKIM::DNS::resolver(
    Net::DNS::Resolver->new(
        nameservers => [$host], port => $port, recurse => 0, retry => 2,
        udp_timeout => 5, tcp_timeout => 5, persistent_udp => 0,
    )
);
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\015?\012$/\015\012/;
    $dkim->PRINT($line);
}
$dkim->CLOSE;
foreach my $sig ($dkim->signatures) {
    printf "%s\t%s\t%s\t%s\t%s\n", $sig->result, $sig->domain // '', $sig->selector // '',
        $sig->algorithm // '', $sig->result_detail // '';
}
printf "overall\t%s\t%s\n", $dkim->result, $dkim->result_detail // '';
